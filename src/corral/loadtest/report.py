"""The result of a loadtest: one object, its JSON form, a live progress view and final tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from corral.loadtest.config import LoadtestConfig
from corral.loadtest.metrics import ServerSampler, Stats, clock, percentiles
from corral.loadtest.verify import Violations

EXAMPLES_SHOWN = 3
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadtestReport:
    """Everything one loadtest found and measured. ``exit_code`` is what the CLI exits with:
    1 on any isolation, completeness or order violation (or when no run could be verified,
    or on errors with ``fail_on_errors``), else 0.
    """

    config: dict[str, Any]
    token_source: str
    duration_s: float
    run_window_s: float
    users: int
    users_connected: int
    connections: int
    runs_planned: int
    runs_started: int
    runs_completed: int
    frames: int
    events: int
    bytes_received: int
    start_latency_ms: dict[str, float | None]
    completion_latency_ms: dict[str, float | None]
    errors: dict[str, int]
    error_examples: dict[str, list[str]]
    outcomes: dict[str, int]
    violations: dict[str, Any]
    violations_by_category: dict[str, int]
    duplicates: int
    duplicates_tolerated: int
    reconnects: int
    drops: int
    starts_retried: int
    starts_over_http: int
    server: dict[str, Any] | None
    open_file_limit: int
    fail_on_errors: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: LoadtestConfig,
        stats: Stats,
        violations: Violations,
        server: ServerSampler,
        duration_s: float,
        token_source: str,
        open_file_limit: int,
        notes: list[str],
    ) -> LoadtestReport:
        return cls(
            config=config.public(),
            token_source=token_source,
            duration_s=round(duration_s, 3),
            run_window_s=round(stats.run_window_s, 3),
            users=config.users,
            users_connected=stats.users_connected,
            connections=config.users * config.connections_per_user,
            runs_planned=config.total_runs,
            runs_started=stats.runs_started,
            runs_completed=stats.runs_completed,
            frames=stats.frames,
            events=stats.events,
            bytes_received=stats.bytes,
            start_latency_ms=percentiles(stats.start_latency_s),
            completion_latency_ms=percentiles(stats.completion_latency_s),
            errors=dict(sorted(stats.errors.items())),
            error_examples={k: list(v) for k, v in sorted(stats.error_examples.items())},
            outcomes=dict(sorted(stats.outcomes.items())),
            violations=violations.as_dict(),
            violations_by_category=violations.by_category(),
            duplicates=stats.duplicates,
            duplicates_tolerated=stats.duplicates_tolerated,
            reconnects=stats.reconnects,
            drops=stats.drops,
            starts_retried=stats.starts_retried,
            starts_over_http=stats.starts_over_http,
            server=server.as_dict(config.users),
            open_file_limit=open_file_limit,
            fail_on_errors=config.fail_on_errors,
            notes=notes,
        )

    @property
    def runs_per_s(self) -> float:
        return self.runs_completed / self.run_window_s if self.run_window_s else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.run_window_s if self.run_window_s else 0.0

    @property
    def violation_total(self) -> int:
        return sum(self.violations_by_category.values())

    @property
    def failures(self) -> list[str]:
        """Why the loadtest failed, one sentence each; empty when it passed."""
        out = [
            f"{category}: {n} violation(s)"
            for category, n in self.violations_by_category.items()
            if n
        ]
        if self.runs_completed == 0:
            out.append("no run completed, so nothing was verified")
        if self.fail_on_errors and self.errors:
            out.append(f"{sum(self.errors.values())} error(s) and --fail-on-errors")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "config": self.config,
            "token_source": self.token_source,
            "duration_s": self.duration_s,
            "run_window_s": self.run_window_s,
            "users": self.users,
            "users_connected": self.users_connected,
            "connections": self.connections,
            "runs": {
                "planned": self.runs_planned,
                "started": self.runs_started,
                "completed": self.runs_completed,
                "per_s": round(self.runs_per_s, 2),
                "outcomes": self.outcomes,
            },
            "events": {
                "delivered": self.events,
                "per_s": round(self.events_per_s, 1),
                "frames": self.frames,
                "bytes": self.bytes_received,
                "duplicates": self.duplicates,
                "duplicates_after_resume": self.duplicates_tolerated,
            },
            "latency_ms": {
                "start": self.start_latency_ms,
                "completion": self.completion_latency_ms,
            },
            "errors": self.errors,
            "error_examples": self.error_examples,
            "reconnects": self.reconnects,
            "drops": self.drops,
            "starts_retried": self.starts_retried,
            "starts_over_http": self.starts_over_http,
            "violations": self.violations,
            "violations_by_category": self.violations_by_category,
            "server": self.server,
            "open_file_limit": self.open_file_limit,
            "notes": self.notes,
        }


# -- rendering --------------------------------------------------------------------------------


def progress_view(stats: Stats, config: LoadtestConfig) -> Table:
    """The live line while a loadtest runs: users, runs, events, errors."""
    table = Table.grid(padding=(0, 2))
    table.add_row(
        f"{clock() - stats.began:5.1f} s",
        f"users {stats.users_connected}/{config.users} connected, {stats.users_done} done",
        f"connections {stats.connections_open}",
        f"runs {stats.runs_started} started, {stats.runs_completed}/{config.total_runs} complete",
        f"events {stats.events}",
        Text(f"errors {stats.error_total}", style="red" if stats.error_total else ""),
    )
    return table


def _latency(values: dict[str, float | None]) -> str:
    if values.get("p50") is None:
        return "-"
    return " / ".join(f"{values[k]:.1f}" for k in ("p50", "p95", "p99", "max"))


def _mib(value: object) -> str:
    return f"{value / MIB:.1f} MiB" if isinstance(value, int) else "?"


def summary_table(report: LoadtestReport) -> Table:
    cfg = report.config
    table = Table(title="corral loadtest", show_header=False, title_justify="left")
    table.add_column("measure", style="bold")
    table.add_column("value")
    agent = f"{cfg['agent']}"
    if cfg["agent"] == "echo":
        agent += f" (steps {cfg['steps']}, delay {cfg['delay_ms']} ms)"
    table.add_row("server", str(cfg["url"]))
    table.add_row(
        "load",
        f"{report.users} users x {cfg['connections_per_user']} connections, "
        f"{cfg['runs_per_user']} run(s) each, {agent}, ramp {cfg['ramp_s']:g} s",
    )
    table.add_row("duration", f"{report.duration_s:.2f} s (runs: {report.run_window_s:.2f} s)")
    table.add_row("users connected", f"{report.users_connected}/{report.users}")
    table.add_row(
        "runs",
        f"{report.runs_started}/{report.runs_planned} started, {report.runs_completed} complete"
        f" on every connection; {report.runs_per_s:.1f} runs/s",
    )
    table.add_row("events delivered", f"{report.events} ({report.events_per_s:,.0f} events/s)")
    table.add_row("start latency ms p50/p95/p99/max", _latency(report.start_latency_ms))
    table.add_row("completion latency ms p50/p95/p99/max", _latency(report.completion_latency_ms))
    table.add_row(
        "duplicates",
        f"{report.duplicates} (after resume, allowed: {report.duplicates_tolerated})",
    )
    table.add_row("reconnects", str(report.reconnects))
    table.add_row("sockets dropped on purpose", str(report.drops))
    table.add_row("starts retried by key after a drop", str(report.starts_retried))
    table.add_row("starts over HTTP, every socket down", str(report.starts_over_http))
    table.add_row("errors", str(sum(report.errors.values())))
    if report.server is not None:
        server = report.server
        per_user = server["per_user_bytes"]
        table.add_row(
            "server RSS",
            f"{_mib(server['before_bytes'])} before, {_mib(server['peak_bytes'])} peak, "
            f"{_mib(server['after_bytes'])} after; "
            + (f"{per_user / 1024:.1f} KiB per user" if isinstance(per_user, int) else "?"),
        )
        if server["cpu_s"] is not None and server["wall_s"]:
            table.add_row(
                "server CPU",
                f"{server['cpu_s']:.1f} s in {server['wall_s']:.1f} s "
                f"({100 * server['cpu_s'] / server['wall_s']:.0f}% of one core)",
            )
    return table


def errors_table(report: LoadtestReport) -> Table:
    table = Table(title="errors by kind", title_justify="left")
    table.add_column("kind")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for kind, n in report.errors.items():
        examples = report.error_examples.get(kind, [])[:EXAMPLES_SHOWN]
        table.add_row(kind, str(n), "\n".join(examples))
    return table


def violations_table(report: LoadtestReport) -> Table:
    table = Table(title="violations", title_justify="left", show_lines=True)
    table.add_column("kind", style="bold red")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for kind, entry in report.violations.items():
        examples = "\n".join(entry["examples"][:EXAMPLES_SHOWN])
        table.add_row(kind, str(entry["count"]), examples)
    return table


def render(report: LoadtestReport, console: Console) -> None:
    """Print the final tables and the verdict."""
    parts: list[Any] = [summary_table(report)]
    if report.errors:
        parts.append(errors_table(report))
    if report.violations:
        parts.append(violations_table(report))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    if report.passed:
        verdict = Text(
            "PASSED: no isolation, completeness or order violation in "
            f"{report.runs_completed} runs "
            f"on {report.connections} connections",
            style="bold green",
        )
    else:
        verdict = Text("FAILED: " + "; ".join(report.failures), style="bold red")
    parts.append(verdict)
    console.print(Group(*parts))
