"""Fuzz target: the SSE decoder (``vendors/sse.py``).

Input: the raw bytes of an event stream. The stream is decoded whole, one byte at a time and
split at points drawn from the input itself; every split must give the same events, and those
must be the events a plain, line-by-line reading of the documented rules gives. The decoder
documents no exception, so any exception is a failure.
"""

from __future__ import annotations

import random
import re

from longread_server.vendors.sse import ServerSentEvent, SSEDecoder

# The only line ends: CRLF, CR, LF (never U+2028, U+0085 or a form feed).
_LINE_END = re.compile(r"\r\n|\r|\n")


def decode(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def reference(data: bytes) -> list[ServerSentEvent]:
    """The documented rules, applied in the most obvious way (slow, character by line)."""
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = _LINE_END.split(text)
    tail = lines.pop()  # the unterminated rest ("" when the stream ends with a line end)
    if tail:
        lines += [tail, ""]  # end of stream ends the last line and the pending event
    else:
        lines.append("")  # ...and flushes an event still pending
    events: list[ServerSentEvent] = []
    data_lines: list[str] = []
    event, last_id, retry = "", "", None
    for line in lines:
        if line == "":
            if data_lines:
                events.append(ServerSentEvent("\n".join(data_lines), event, last_id, retry))
                data_lines, retry = [], None
            event = ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            retry = int(value)
    return events


def splits(data: bytes) -> list[bytes]:
    """``data`` cut at a few points chosen by the input itself (reproducible from it)."""
    if len(data) < 2:
        return [data]
    rng = random.Random(data)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def fuzz(data: bytes) -> None:
    whole = decode([data])
    assert decode([data[i : i + 1] for i in range(len(data))]) == whole, "byte by byte"
    assert decode(splits(data)) == whole, "split at random points"
    # Empty reads between the others change nothing.
    assert decode([b"", *(p for c in splits(data) for p in (c, b""))]) == whole, "empty reads"
    assert whole == reference(data), (whole, reference(data))
    for ev in whole:
        assert "\r" not in ev.data and "\r" not in ev.event and "\n" not in ev.event
        assert "\0" not in ev.id and "\n" not in ev.id and "\r" not in ev.id
        assert ev.retry is None or ev.retry >= 0
