"""Server-Sent Events decoding, as the HTML standard's event-stream interpretation describes it.

Lines end in CRLF, LF or CR; a line starting with ``:`` is a comment (the server's keep-alive);
``field: value`` lines build an event (``data`` lines join with newlines) and a blank line
dispatches it. ``id`` sets the last event id, which persists across events and is what a
reconnecting client sends back as ``Last-Event-ID``; ``retry`` sets the reconnection delay.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: ``event`` name (default ``message``), ``data``, and the last event
    id in force when it was dispatched (None if the stream never set one)."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Feed it the stream's bytes in any chunking; it returns the events completed so far.

    ``last_event_id`` and ``retry_ms`` keep the stream's latest ``id`` and ``retry`` fields.
    """

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return every event whose blank line it completed."""
        self._buffer += self._text.decode(chunk)
        if not self._started and self._buffer:
            self._buffer = self._buffer.removeprefix("\ufeff")
            self._started = True
        return self._events(self._complete_lines())

    def close(self) -> list[ServerSentEvent]:
        """At the end of the stream: a final CR still ends its line (an unfinished event is
        dropped, as the standard says)."""
        self._buffer += self._text.decode(b"", final=True)
        events = self._events(self._complete_lines())
        line, self._buffer = self._buffer, ""
        return events + (self._events([line[:-1]]) if line.endswith("\r") else [])

    def _events(self, lines: Iterable[str]) -> list[ServerSentEvent]:
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _complete_lines(self) -> Iterator[str]:
        start = 0
        buffer = self._buffer
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if buffer[end] == "\r":
                if end + 1 == len(buffer):
                    break  # a CR at the end may be the first half of a CRLF: wait for more
                step = 2 if buffer[end + 1] == "\n" else 1
            else:
                step = 1
            yield buffer[start:end]
            start = end + step
        self._buffer = buffer[start:]

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self.last_event_id)


def iter_sse(
    chunks: Iterable[bytes], decoder: SSEDecoder | None = None
) -> Iterator[ServerSentEvent]:
    """The events of a byte stream; an event the stream did not finish with a blank line is
    dropped, as the standard says."""
    decoder = decoder or SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()
