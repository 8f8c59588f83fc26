"""Incremental Server-Sent Events decoding: bytes in, events out.

Follows the WHATWG event-stream interpretation the way the vendor SDKs apply it:

* lines end with CRLF, LF or CR, and a CRLF split across two reads is still one line end;
  nothing else ends a line (``str.splitlines`` would also split on U+2028, which vendors
  send raw inside JSON strings);
* bytes are decoded incrementally, so a multi-byte UTF-8 character split across reads is
  kept whole; invalid bytes become U+FFFD; one BOM at the very start is dropped;
* ``data:`` lines accumulate and are joined with ``\\n`` (an empty ``data:`` counts);
* a blank line dispatches the event, unless no ``data:`` line was seen (then the ``event:``
  name is dropped, as the spec says);
* lines starting with ``:`` are comments (``: keep-alive``) and are skipped;
* unlike the spec, but like the SDKs, an event still pending at end of stream is flushed.

The decoder is on the hot path, so it works on whole strings (``split``/``partition``) and
never loops over single characters.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterable, AsyncIterator
from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``event`` is "" when the stream sent no ``event:`` line
    (WHATWG would call it "message"); ``id`` is the last event id seen so far (it persists
    across events, as the spec says); ``retry`` is a reconnection time in ms, if one came
    since the previous event."""

    data: str
    event: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Feed it raw byte chunks as they arrive; it returns the events each chunk completes."""

    __slots__ = ("_bytes", "_data", "_event", "_last_id", "_partial", "_retry", "_skip_lf")

    def __init__(self) -> None:
        # utf-8-sig drops a BOM at the start of the stream only (even if split across reads).
        self._bytes = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial: list[str] = []  # pieces of the current, unterminated line
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is part of it
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk; return the events it completed (often none or one)."""
        return self._feed_text(self._bytes.decode(chunk))

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: finish the last line and flush an event without a trailing blank
        line."""
        events = self._feed_text(self._bytes.decode(b"", True))
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._lines_to_events([line, ""], events)
        elif self._data:
            self._lines_to_events([""], events)
        return events

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if self._skip_lf:
            if not text:
                return []
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            if text:
                self._partial.append(text)
            return []
        lines = text.split("\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial.clear()
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        events: list[ServerSentEvent] = []
        self._lines_to_events(lines, events)
        return events

    def _lines_to_events(self, lines: list[str], events: list[ServerSentEvent]) -> None:
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(
                        ServerSentEvent(
                            data[0] if len(data) == 1 else "\n".join(data),
                            self._event,
                            self._last_id,
                            self._retry,
                        )
                    )
                    data.clear()
                    self._retry = None
                self._event = ""
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value and value[0] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\0" not in value:
                    self._last_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """Decode a byte stream (e.g. ``response.aiter_bytes()``) into events."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event
