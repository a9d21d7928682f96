"""Prometheus metrics in a registry owned by one app (never the process-global default)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from corral.core.events import Event, EventType, terminal_status


class Metrics:
    """Every ``corral_*`` metric of one app. Created by the app's lifespan."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "corral_runs_started", "Runs that began executing (agent_started).", registry=r
        )
        self.runs_submitted = Counter(
            "corral_runs_submitted", "Runs accepted by the API.", ["via"], registry=r
        )
        self.runs_finished = Counter(
            "corral_runs_finished", "Runs that ended, by final status.", ["status"], registry=r
        )
        self.runs_running = Gauge("corral_runs_running", "Runs executing now.", registry=r)
        self.runs_queued = Gauge("corral_runs_queued", "Runs waiting for a slot.", registry=r)
        self.events = Counter(
            "corral_events_stored", "Events stored, by type.", ["type"], registry=r
        )
        self.connections = Gauge(
            "corral_connections", "Open event connections, by kind.", ["kind"], registry=r
        )
        self.delivery_latency = Histogram(
            "corral_event_delivery_seconds",
            "From an event's emission to its write to a socket.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.slow_consumers = Counter(
            "corral_slow_consumer_closes", "Connections closed with 1013.", registry=r
        )
        self.security_violations = Counter(
            "corral_security_violations",
            "Events refused because they belonged to another user.",
            registry=r,
        )
        self.stale_runs = Gauge(
            "corral_stale_runs", "Running runs with no event for 30 s.", registry=r
        )
        self.stuck_tools = Gauge("corral_stuck_tools", "Tool calls running past 60 s.", registry=r)
        self.unpaired_tools = Gauge(
            "corral_unpaired_tool_events", "tool_executing never completed (total).", registry=r
        )
        self.http_errors = Counter(
            "corral_http_errors", "Error answers, by code.", ["code"], registry=r
        )

    def observe_committed(self, events: Sequence[Event]) -> None:
        """Count a stored batch: one increment per label, not per event (it is on the hot
        path: a batch holds hundreds of events under load)."""
        by_type = Tally(ev.type.value for ev in events)
        for type_, count in by_type.items():
            self.events.labels(type_).inc(count)
        started = by_type.get(EventType.AGENT_STARTED.value, 0)
        if started:
            self.runs_started.inc(started)
        finished = Tally(
            terminal_status(ev.type, ev.data).value for ev in events if ev.type.terminal
        )
        for status, count in finished.items():
            self.runs_finished.labels(status).inc(count)

    def count_slow_consumer(self, _conn: object) -> None:
        """A connection was closed as a slow consumer (a Connection's ``on_slow_consumer``)."""
        self.slow_consumers.inc()

    def observe_delivery(self, event: Event) -> None:
        """An event was written to a socket: record how long after its emission."""
        self.delivery_latency.observe(max(0.0, time.time() - event.emitted_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)
