"""The SSE decoder against the WHATWG edge cases the vendor SDKs test."""

from __future__ import annotations

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from longread_server.vendors.sse import ServerSentEvent, SSEDecoder, aiter_sse

from .support import ChunkStream, split_every


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def datas(*chunks: bytes) -> list[str]:
    return [event.data for event in decode(*chunks)]


def test_simple_events() -> None:
    assert decode(b"data: a\n\ndata: b\n\n") == [ServerSentEvent("a"), ServerSentEvent("b")]


def test_event_name_id_and_retry() -> None:
    events = decode(b"event: message_start\nid: 7\nretry: 1500\ndata: {}\n\n")
    assert events == [ServerSentEvent("{}", "message_start", "7", 1500)]


def test_events_dispatch_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("a")]
    assert decoder.feed(b"data: b") == []
    assert decoder.flush() == [ServerSentEvent("b")]


def test_several_data_lines_are_joined_with_newlines() -> None:
    assert datas(b"data: a\ndata: b\ndata: c\n\n") == ["a\nb\nc"]


def test_empty_data_lines_count() -> None:
    assert datas(b"data:\n\n") == [""]
    assert datas(b"data\n\n") == [""]  # a field name alone has an empty value
    assert datas(b"data: a\ndata:\ndata: b\n\n") == ["a\n\nb"]
    assert datas(b"data: a\ndata:\n\n") == ["a\n"]


def test_event_without_data_is_not_dispatched_and_its_name_is_dropped() -> None:
    events = decode(b"event: ping\n\ndata: x\n\n")
    assert events == [ServerSentEvent("x")]


def test_comments_are_skipped() -> None:
    assert datas(b": keep-alive\n\n: keep-alive\ndata: x\n: mid\n\n") == ["x"]


def test_only_one_leading_space_is_removed_and_colons_stay_in_values() -> None:
    assert datas(b"data:x\n\ndata:  two\n\ndata: a: b\n\n") == ["x", " two", "a: b"]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: x\nevent\n\n") == [ServerSentEvent("x", "")]


def test_crlf_cr_and_lf_line_endings() -> None:
    expected = [ServerSentEvent("a\nb", "e"), ServerSentEvent("c")]
    for ending in (b"\n", b"\r\n", b"\r"):
        body = ending.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
        assert decode(body) == expected
    assert decode(b"event: e\r\ndata: a\rdata: b\n\rdata: c\r\n\r\n") == expected


def test_crlf_split_across_reads_is_one_line_end() -> None:
    assert datas(b"data: a\r", b"\ndata: b\r\n\r\n") == ["a\nb"]
    assert datas(b"data: a\r", b"", b"\n", b"\r\n") == ["a"]
    assert datas(b"data: a\r", b"\r", b"data: b\r\r") == ["a", "b"]


def test_multibyte_characters_split_across_reads() -> None:
    body = "data: h\u00e9llo \u65e5\u672c \U0001f642\n\n".encode()
    for size in (1, 2, 3):
        assert datas(*split_every(body, size)) == ["h\u00e9llo \u65e5\u672c \U0001f642"]


def test_line_separator_inside_json_does_not_split_lines() -> None:
    payload = '{"text":"a\u2028b\u2029c\x85d\x0ce\x1cf"}'
    assert datas(f"data: {payload}\n\n".encode()) == [payload]


def test_bom_at_start_is_dropped_even_when_split() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent("x")]
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent("x")]
    # Only at the start: a later BOM is data.
    assert datas(b"data: a\n\ndata: \xef\xbb\xbfb\n\n") == ["a", "\ufeffb"]


def test_no_trailing_blank_line_at_eof_flushes_the_last_event() -> None:
    assert datas(b"data: a\n\ndata: b") == ["a", "b"]
    assert datas(b"data: a\n\ndata: b\n") == ["a", "b"]
    assert datas(b"data: a\r") == ["a"]
    assert datas(b"event: x\n") == []
    assert datas(b": just a comment") == []


def test_id_persists_and_rejects_nul() -> None:
    events = decode(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x00\ndata: c\n\nid\ndata: d\n\n")
    assert [event.id for event in events] == ["1", "1", "1", ""]


def test_retry_needs_ascii_digits_and_rides_on_the_next_event() -> None:
    events = decode(b"retry: 10x\ndata: a\n\nretry: 25\n\ndata: b\n\ndata: c\n\n")
    assert [event.retry for event in events] == [None, 25, None]
    assert decode("retry: \u0663\ndata: a\n\n".encode())[0].retry is None


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert datas(b"data: a\xffb\n\n") == ["a\ufffdb"]
    assert datas(b"data: a\xe6") == ["a\ufffd"]  # truncated at EOF


def test_long_line_over_many_reads() -> None:
    value = "x" * 10_000
    assert datas(*split_every(f"data: {value}\n\n".encode(), 7)) == [value]


async def test_aiter_sse_over_an_httpx_stream() -> None:
    stream = ChunkStream([b"data: a\n", b"\ndata: \xc3", b"\xa9"])
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, stream=stream))
    ) as client:
        response = await client.get("http://upstream/")
        events = [event async for event in aiter_sse(response.aiter_bytes())]
    assert events == [ServerSentEvent("a"), ServerSentEvent("\u00e9")]


# A value may hold anything but line ends (incl. U+2028, multi-byte characters, colons).
_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=12,
)
_names = st.sampled_from(["", "message_start", "content_block_delta", "error"])
_events = st.lists(st.tuples(_names, st.lists(_values, min_size=1, max_size=3)), max_size=6)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    events = draw(_events)
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    if draw(st.booleans()):
        lines.append(": keep-alive")
        lines.append("")
    for name, values in events:
        if name:
            lines.append(f"event: {name}")
        for value in values:
            # "data:x" and "data: x" mean the same, unless the value itself starts with a space.
            space = " " if value.startswith(" ") or draw(st.booleans()) else ""
            lines.append(f"data:{space}{value}")
        lines.append("")
        expected.append(ServerSentEvent("\n".join(values), name))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = "".join(line + ending for line in lines)
    if draw(st.booleans()) and text.endswith(ending * 2):
        text = text[: -len(ending)]  # no trailing blank line at EOF
    body = text.encode()
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    return body, expected


@settings(max_examples=300, deadline=None)
@given(stream=_streams(), data=st.data())
def test_any_split_of_a_stream_decodes_to_the_same_events(
    stream: tuple[bytes, list[ServerSentEvent]], data: st.DataObject
) -> None:
    body, expected = stream
    cuts = sorted(data.draw(st.sets(st.integers(0, len(body)), max_size=12)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert decode(*chunks) == expected
    assert decode(body) == expected
