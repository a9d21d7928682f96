"""``--profile``: sample the corral server with py-spy while a suite measures it.

Writes ``results/<name>.svg`` (a flame graph) and ``results/<name>-top.txt`` (the functions
with the most samples, by own time and by inclusive time, from py-spy's collapsed stacks).
py-spy samples with ``--nonblocking``, so the server is never paused; expect the measured
numbers of a profiled repetition to be a little lower.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

from harness import RESULTS

RATE_HZ = 100


class Profiler:
    def __init__(self, pid: int, name: str, duration_s: float, *, subprocesses: bool = False):
        self.pid = pid
        self.name = name
        self.duration_s = max(1, int(duration_s))
        self.subprocesses = subprocesses
        self._procs: list[subprocess.Popen[bytes]] = []
        RESULTS.mkdir(exist_ok=True)
        self.svg = RESULTS / f"{name}.svg"
        self.raw = RESULTS / f"{name}.collapsed.txt"
        self.top = RESULTS / f"{name}-top.txt"

    def start(self) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        common = [exe, "record", "--pid", str(self.pid), "--duration", str(self.duration_s)]
        common += ["--rate", str(RATE_HZ), "--nonblocking"]
        if self.subprocesses:
            common.append("--subprocesses")
        for fmt, out in (("flamegraph", self.svg), ("raw", self.raw)):
            self._procs.append(
                subprocess.Popen(
                    [*common, "--format", fmt, "--output", str(out)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> str:
        for proc in self._procs:
            try:
                proc.wait(self.duration_s + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()
        if not self.raw.exists():
            return f"profile {self.name}: py-spy wrote nothing"
        text = summarize(self.raw)
        self.top.write_text(text)
        self.raw.unlink()
        return f"profile: {self.svg.name}, {self.top.name}"


def summarize(path: Path, limit: int = 40) -> str:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"samples: {total}", "", "own time (where the CPU is):"]
    for frame, n in own.most_common(limit):
        out.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
    out += ["", "inclusive time (what the time is spent under):"]
    for frame, n in incl.most_common(limit):
        out.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
    return "\n".join(out) + "\n"


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" → "func (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({short})"
