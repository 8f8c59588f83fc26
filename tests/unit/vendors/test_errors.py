"""Error classification and error-body reading, independent of a vendor."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from longread_server.domain import ErrorKind, UpstreamError
from longread_server.vendors.errors import (
    classify,
    details_from_body,
    identifier,
    kind_for_status,
    kind_for_vendor_error,
    load_json,
    scrub,
    status_error,
    stream_error,
    transport_error,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.BAD_REQUEST),
        (401, ErrorKind.AUTH),
        (402, ErrorKind.BILLING),
        (403, ErrorKind.AUTH),
        (404, ErrorKind.NOT_FOUND),
        (408, ErrorKind.TIMEOUT),
        (409, ErrorKind.SERVER),
        (413, ErrorKind.BAD_REQUEST),
        (422, ErrorKind.BAD_REQUEST),
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.SERVER),
        (502, ErrorKind.SERVER),
        (503, ErrorKind.OVERLOADED),
        (504, ErrorKind.SERVER),
        (529, ErrorKind.OVERLOADED),
        (418, ErrorKind.OTHER),
        (302, ErrorKind.OTHER),
    ],
)
def test_kind_for_status(status: int, kind: ErrorKind) -> None:
    assert kind_for_status(status) is kind


def test_vendor_error_names() -> None:
    assert kind_for_vendor_error("invalid_request_error", "model_not_found") is ErrorKind.NOT_FOUND
    assert kind_for_vendor_error("tokens", "rate_limit_exceeded") is ErrorKind.RATE_LIMITED
    assert kind_for_vendor_error("BadRequestError", "400") is ErrorKind.BAD_REQUEST
    assert kind_for_vendor_error("", "503") is ErrorKind.OVERLOADED
    assert kind_for_vendor_error("something_new", "") is None
    # Digits that are not ASCII are no status (int() refuses superscripts).
    assert kind_for_vendor_error("", "\u00b2\u00b2\u00b2") is None
    assert stream_error("up", {"error": {"code": "\u00b2\u00b2\u00b2"}}).kind is ErrorKind.SERVER


def test_classify_prefers_status_except_billing_and_overload() -> None:
    assert classify(429, "insufficient_quota", "insufficient_quota") is ErrorKind.BILLING
    assert classify(429, "tokens", "rate_limit_exceeded") is ErrorKind.RATE_LIMITED
    assert classify(500, "overloaded_error", "") is ErrorKind.OVERLOADED
    assert classify(404, "api_error", "") is ErrorKind.NOT_FOUND  # Ollama's unknown model
    assert classify(418, "rate_limit_error", "") is ErrorKind.RATE_LIMITED
    assert classify(418, "", "") is ErrorKind.OTHER


def test_bodies_nested_flat_and_plain() -> None:
    nested = details_from_body(
        b'{"error":{"message":"bad key","type":"invalid_request_error","param":null,'
        b'"code":"invalid_api_key"}}'
    )
    assert (nested.message, nested.vendor_type, nested.vendor_code) == (
        "bad key",
        "invalid_request_error",
        "invalid_api_key",
    )
    flat = details_from_body(
        b'{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}'
    )
    assert (flat.message, flat.vendor_type, flat.vendor_code) == (
        "too long",
        "BadRequestError",
        "400",
    )
    anthropic = details_from_body(
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
        b'"request_id":"req_1"}'
    )
    assert (anthropic.vendor_type, anthropic.request_id) == ("overloaded_error", "req_1")
    assert details_from_body(b'{"error":"model not found"}').message == "model not found"
    assert details_from_body(b"<html>Bad Gateway</html>\n").message == "<html>Bad Gateway</html>"
    assert details_from_body(b"{not json").message == "{not json"
    assert details_from_body(b"").message == ""
    assert details_from_body(b"[1, 2]").message == "[1, 2]"
    assert len(details_from_body(b"x" * 100_000).message) == 1000
    # Deeper than json can read: plain text, not a RecursionError.
    assert details_from_body(b"[" * 100_000).message == "[" * 1000


def test_load_json_fails_as_a_connection_error_also_when_too_deep() -> None:
    for data in (b"{", b"\xff", b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(UpstreamError) as caught:
            load_json("up", data)
        assert caught.value.kind is ErrorKind.CONNECTION


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _loaded(data: str) -> tuple[str, Any]:
    try:
        return "value", json.loads(data)
    except (ValueError, RecursionError) as e:
        return "error", type(e).__name__


@given(
    _JSON,
    st.sampled_from(["", " ", "\n", "\t \r\n", "x", "{}", " 1", "]", "\ufeff"]),
    st.sampled_from(["", " ", "\n", "\ufeff"]),
)
def test_load_json_reads_what_json_loads_reads_and_fails_where_it_fails(
    value: Any, after: str, before: str
) -> None:
    # Its shortcut for a text that starts as an object or array must give json.loads'
    # answer: the same value, or a failure (whitespace around it, data after it, a BOM).
    for data in (before + json.dumps(value) + after, before + json.dumps(value)[:-1] + after):
        kind, expected = _loaded(data)
        if kind == "value":
            assert load_json("up", data) == expected
        else:
            with pytest.raises(UpstreamError) as caught:
                load_json("up", data)
            assert caught.value.kind is ErrorKind.CONNECTION


def test_status_error_names_the_status_by_its_standard_phrase() -> None:
    error = status_error(
        "up", 502, httpx.Headers(), b"", request_id="", rate_limits=None, reason="Whatever"
    )
    assert error.kind is ErrorKind.SERVER
    assert error.message == "up: HTTP 502 Bad Gateway"  # not the phrase the server chose


def test_stream_errors_default_to_server() -> None:
    assert stream_error("up", {"error": {"message": "?"}}).kind is ErrorKind.SERVER
    assert stream_error("up", "boom").kind is ErrorKind.SERVER
    error = stream_error("up", {"error": {"type": "server_error", "message": "oops"}})
    assert (error.kind, error.status, error.vendor_type) == (ErrorKind.SERVER, None, "server_error")
    assert error.message == "up: error in response (server_error)" and error.detail == "oops"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectTimeout("slow"), ErrorKind.TIMEOUT),
        (httpx.ReadTimeout("slow"), ErrorKind.TIMEOUT),
        (httpx.PoolTimeout("slow"), ErrorKind.TIMEOUT),
        (httpx.ConnectError("refused"), ErrorKind.CONNECTION),
        (httpx.RemoteProtocolError("peer closed"), ErrorKind.CONNECTION),
        (httpx.ReadError("reset"), ErrorKind.CONNECTION),
        (httpx.InvalidURL("bad"), ErrorKind.OTHER),
    ],
)
def test_transport_errors(exc: Exception, kind: ErrorKind) -> None:
    assert transport_error("up", exc).kind is kind


# --- redaction ------------------------------------------------------------------------------


def test_an_error_message_never_carries_the_vendors_words() -> None:
    body = (
        b'{"error":{"message":"Invalid prompt: \'the secret plan\'","type":"invalid_request_error",'
        b'"code":"invalid_prompt"},"request_id":"req_7"}'
    )
    error = status_error("up", 400, httpx.Headers(), body, request_id="", rate_limits=None)
    assert error.message == "up: HTTP 400 Bad Request (invalid_request_error, invalid_prompt)"
    assert str(error) == error.message and "secret" not in repr(error)
    assert error.detail == "Invalid prompt: 'the secret plan'" and error.request_id == "req_7"
    page = b"<html><title>502</title><pre>the secret plan</pre></html>"
    error = status_error("up", 502, httpx.Headers(), page, request_id="", rate_limits=None)
    assert error.message == "up: HTTP 502 Bad Gateway" and "secret plan" in error.detail


def test_type_code_and_request_id_are_kept_only_when_they_are_identifiers() -> None:
    assert identifier("rate_limit_exceeded") == "rate_limit_exceeded"
    assert identifier("req_018EeWyXxfu5pfWkrYcMdjWG") == "req_018EeWyXxfu5pfWkrYcMdjWG"
    assert identifier("the secret plan") == "" and identifier("") == ""
    body = b'{"error":{"message":"m","type":"the secret plan","code":"x y"},"request_id":"a b"}'
    error = status_error("up", 400, httpx.Headers(), body, request_id="", rate_limits=None)
    assert (error.vendor_type, error.vendor_code, error.request_id) == ("", "", "")
    assert error.message == "up: HTTP 400 Bad Request"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_keys_answer_is_dropped(status: int) -> None:
    body = (
        b'{"error":{"message":"Incorrect API key provided: sk-ab****wxyz.",'
        b'"type":"invalid_request_error","code":"invalid_api_key"}}'
    )
    error = status_error("up", status, httpx.Headers(), body, request_id="", rate_limits=None)
    assert error.kind is ErrorKind.AUTH and error.detail == ""
    assert "wxyz" not in error.message and error.vendor_code == "invalid_api_key"
    streamed = stream_error("up", {"error": {"type": "authentication_error", "message": "wxyz"}})
    assert streamed.kind is ErrorKind.AUTH and streamed.detail == ""


def test_scrub_replaces_every_word_that_ends_like_a_secret() -> None:
    key = "sk-live-abcdefgh1234"
    text = f"key {key} or sk-li*********1234, not 123 nor abcdefgh"
    assert scrub(text, [key]) == "key [redacted] or [redacted] not 123 nor abcdefgh"
    assert scrub("nothing here", [key, "", "abc"]) == "nothing here"


def test_a_transport_errors_text_is_detail_only() -> None:
    # h11 quotes a header value it refuses: the key, when it ends with a stray newline.
    exc = httpx.LocalProtocolError("Illegal header value b'Bearer sk-live-abcd1234\\n'")
    error = transport_error("up", exc)
    assert error.message == "up: LocalProtocolError" and "abcd1234" in error.detail
