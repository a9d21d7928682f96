"""A Server-Sent Events parser over bytes as they arrive (the HTML rules), with no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One message: its ``event`` name (``message`` when none was given), its ``data`` (the
    ``data:`` lines joined by newlines), the last event ``id`` seen so far, if any (as the
    HTML rules carry it forward), and whether this message had an ``id:`` line itself."""

    event: str
    data: str
    id: str | None
    own_id: bool = False


class SSEParser:
    """Feed it chunks (split anywhere, even inside a CRLF or a UTF-8 character); it returns
    the messages each chunk completed. Comments (keepalives) are skipped. Not thread-safe;
    one per response."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._own_id = False
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        self._buffer += chunk
        out: list[SSEMessage] = []
        buffer = self._buffer
        start = 0
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            if buffer[end : end + 1] == b"\r" and end + 1 == len(buffer):
                break  # a CR at the end may be the first half of a CRLF: wait for more
            step = 2 if buffer[end : end + 2] == b"\r\n" else 1
            message = self._line(buffer[start:end].decode("utf-8", errors="replace"))
            if message is not None:
                out.append(message)
            start = end + step
        self._buffer = buffer[start:]
        return out

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                self._own_id = False
                return None
            message = SSEMessage(
                self._event or "message", "\n".join(self._data), self.last_id, self._own_id
            )
            self._data = []
            self._event = ""
            self._own_id = False
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self.last_id = value
            self._own_id = True
        return None
