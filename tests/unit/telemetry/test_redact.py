"""Exception messages on spans and in log lines: only the gateway's own wording, unless content
recording is on."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from longread_server.domain import FieldViolation, InvalidRequest
from longread_server.telemetry.logs import JsonFormatter
from longread_server.telemetry.tracing import LeanTracerProvider, current_span
from opentelemetry.sdk.resources import Resource

from tests.unit.telemetry.test_tracing import Sink

MARKER = "MARKER-quoted-from-a-document"


def fail_in_a_library() -> None:
    try:
        quoted: dict[str, str] = {}
        quoted[MARKER]  # a library quoting the key it was given
    except KeyError as e:
        raise ValueError(f"cannot read {MARKER!r}") from e


@pytest.mark.parametrize("content", [False, True])
def test_a_library_exception_s_message_reaches_a_span_only_with_content(content: bool) -> None:
    tp = LeanTracerProvider(Resource.create({}), record_content=content)
    sink = Sink()
    tp.add_sink(sink)
    tracer = tp.get_tracer("t")
    with pytest.raises(ValueError), current_span(tracer.start_span("step")):
        fail_in_a_library()
    (span,) = sink.spans
    (event,) = span.events
    exported = json.dumps(
        [span.status.description, dict(event.attributes or {})], default=str, ensure_ascii=False
    )
    assert (MARKER in exported) is content
    assert span.status.description is not None
    assert span.status.description.startswith("ValueError")
    stack = (event.attributes or {})["exception.stacktrace"]
    assert "fail_in_a_library" in str(stack) and "KeyError" in str(stack)  # frames kept


def test_the_gateway_s_own_errors_keep_their_message() -> None:
    tp = LeanTracerProvider(Resource.create({}))
    sink = Sink()
    tp.add_sink(sink)
    with (
        pytest.raises(InvalidRequest),
        current_span(tp.get_tracer("t").start_span("step")),
    ):
        raise InvalidRequest([FieldViolation("options.model", "unknown model 'gpt-9'")])
    (span,) = sink.spans
    assert span.status.description == (
        "InvalidRequest: invalid request: options.model: unknown model 'gpt-9'"
    )


@pytest.mark.parametrize("content", [False, True])
def test_a_logged_exception_s_message_only_with_content(content: bool) -> None:
    try:
        fail_in_a_library()
    except ValueError:
        info = sys.exc_info()
    record = logging.getLogger("test").makeRecord(
        "test", logging.ERROR, __file__, 1, "failed", (), info
    )
    line = JsonFormatter(record_content=content).format(record)
    assert (MARKER in line) is content
    assert "fail_in_a_library" in json.loads(line)["exc"]
