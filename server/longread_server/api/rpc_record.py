"""One record per RPC: its server span, its outcome as a metric and one structured log line.

Filled as the request goes (tenant, model, result) and finished exactly once with the status
code. The log line carries counts and identifiers only — never document text, prompts,
answers or keys.

The server span is ours rather than the gRPC instrumentation's interceptor: the interceptor
wraps every servicer context, which costs CPU on every RPC (``bench.telemetry`` measures it),
while this record already sees the method, the metadata and the final status. It follows the
OpenTelemetry RPC conventions: name ``longread.v1.AnalysisService/Analyze``, kind SERVER,
``rpc.system``/``rpc.service``/``rpc.method``/``rpc.grpc.status_code``, and it continues the
caller's trace from the metadata the configured propagators read (``OTEL_PROPAGATORS``:
``traceparent`` by default, ``b3``, ``x-b3-*``...). ``telemetry.grpc_instrumentation`` hands
the server span to the interceptor instead (``app.py``).

The request's labels are echoed on the server span as ``longread.label.<key>``, bounded
(``MAX_LABEL_ATTRIBUTES``, ``MAX_LABEL_ATTRIBUTE_CHARS``), and never on metrics: a label's
values are the caller's to choose, and each distinct value would be a time series of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from contextvars import Token
from dataclasses import dataclass, field

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from longread_server.run.events import JobResult
from longread_server.telemetry import Telemetry
from longread_server.telemetry.tracing import attach_span, detach

log = logging.getLogger("longread.access")

SERVICE = "longread.v1.AnalysisService"
# Codes that mean the server failed, as the RPC semantic conventions count server errors.
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
_CODES = {c.name: c.value[0] for c in grpc.StatusCode}

LABEL_PREFIX = "longread.label."
# A request may carry 64 labels of up to 1,024 characters (api/convert.py); on a span that
# is up to 64 KiB more per RPC, and backends cap the attributes of one span (the SDK's
# default limit is 128). Labels identify a request (team, job, experiment), which takes a
# few short values: 32 of them, cut at 256 characters, keep that and bound the span. The
# labels kept are the first in key order, so one request's span shows the same ones each time.
MAX_LABEL_ATTRIBUTES = 32
MAX_LABEL_ATTRIBUTE_CHARS = 256

# The metadata keys the configured propagators read, per propagator (the global textmap
# is set at import from OTEL_PROPAGATORS, or by a program that embeds the gateway).
_fields_of: tuple[object, frozenset[str]] = (None, frozenset())


def _trace_fields() -> frozenset[str]:
    global _fields_of
    textmap = propagate.get_global_textmap()
    if _fields_of[0] is not textmap:
        # gRPC metadata keys are lower case.
        _fields_of = (textmap, frozenset(f.lower() for f in textmap.fields))
    return _fields_of[1]


def label_attributes(labels: Mapping[str, str]) -> dict[str, str | int]:
    """The span attributes for ``labels``, within the bounds above; how many were left out
    is ``longread.labels.dropped``."""
    keys = sorted(labels)
    attrs: dict[str, str | int] = {
        LABEL_PREFIX + k: labels[k][:MAX_LABEL_ATTRIBUTE_CHARS] for k in keys[:MAX_LABEL_ATTRIBUTES]
    }
    if len(keys) > MAX_LABEL_ATTRIBUTES:
        attrs["longread.labels.dropped"] = len(keys) - MAX_LABEL_ATTRIBUTES
    return attrs


@dataclass(slots=True)
class RpcRecord:
    method: str
    tel: Telemetry
    access_log: bool = True
    metadata: Iterable[tuple[str, str | bytes]] | None = None  # the RPC's invocation metadata
    started: float = field(default_factory=time.perf_counter)
    tenant: str = ""
    vendor: str = ""
    model: str = ""
    document_tokens: int = 0
    result: JobResult | None = None
    done: bool = False
    span: trace.Span | None = None
    token: Token[Context] | None = None
    # The protocol that carried the RPC: "grpc", or "connect_rpc" for Connect and gRPC-Web
    # over HTTP (api/connect.py). Spans and metrics are otherwise the same for both.
    system: str = "grpc"

    def open_span(self) -> None:
        """Starts the server span as the current span, as a child of the caller's trace (in
        ``metadata``) if there is one. Only when tracing is on."""
        parent = None
        metadata = self.metadata
        fields = _trace_fields()
        for key, _ in metadata or ():
            if key in fields:  # a caller's trace (or baggage) to continue
                carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
                parent = propagate.extract(carrier)
                break
        self.span = self.tel.tracer.start_span(
            f"{SERVICE}/{self.method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": self.system,
                "rpc.service": SERVICE,
                "rpc.method": self.method,
            },
        )
        self.token = attach_span(self.span, parent)

    def note_labels(self, labels: Mapping[str, str]) -> None:
        """Echoes the request's labels on the server span: ours, or the gRPC
        instrumentation's (then the current span) when it makes the server span."""
        if not labels or not self.tel.tracing:
            return
        span = self.span if self.span is not None else trace.get_current_span()
        if span.is_recording():
            span.set_attributes(label_attributes(labels))

    def finish(self, code: str, reason: str = "") -> None:
        if self.done:
            return
        self.done = True
        try:
            self._record(code, reason)
        finally:
            if self.span is not None:
                self._end_span(self.span, code, reason)

    def _end_span(self, span: trace.Span, code: str, reason: str) -> None:
        # The status code as gRPC numbers it, whichever protocol carried it: both faces map
        # failures through the same table (api/errors.py); Connect's name for it as well.
        span.set_attribute("rpc.grpc.status_code", _CODES.get(code, 2))
        if self.system != "grpc" and code != "OK":
            span.set_attribute("rpc.connect_rpc.error_code", connect_code_name(code))
        if self.tenant:
            span.set_attribute("longread.tenant", self.tenant)
        if reason:
            span.set_attribute("error.type", reason)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, reason or code))
        span.end()
        if self.token is not None:
            detach(self.token)

    def _record(self, code: str, reason: str) -> None:
        seconds = time.perf_counter() - self.started
        inst = self.tel.instruments
        rpc_attrs = {"rpc.method": self.method, "rpc.grpc.status_code": code}
        if self.system != "grpc":
            rpc_attrs["rpc.system"] = self.system
        inst.rpc_duration.record(seconds, rpc_attrs)
        r = self.result
        if r is not None:
            attrs = {"longread.tenant": self.tenant, "gen_ai.request.model": self.model}
            if r.cost.total_usd:
                inst.cost.add(r.cost.total_usd, attrs)
            # Only a Stream sends tokens as they come; Analyze's "first token" is its answer.
            if r.timings.first_token_s and self.method == "Stream":
                inst.time_to_first_token.record(r.timings.first_token_s, attrs)
        if not self.access_log:
            return
        fields: dict[str, object] = {
            "rpc": self.method,
            "code": code,
            "ms": round(seconds * 1000, 2),
            "tenant": self.tenant,
        }
        if self.system != "grpc":
            fields["protocol"] = self.system
        if reason:
            fields["reason"] = reason
        if self.model:
            fields["model"] = f"{self.vendor}/{self.model}"
        if self.document_tokens:
            fields["document_tokens"] = self.document_tokens
        if r is not None:
            fields.update(
                strategy=r.plan.strategy.value,
                calls=r.usage.calls,
                input_tokens=r.usage.input_tokens,
                output_tokens=r.usage.output_tokens,
                cost_usd=round(r.cost.total_usd, 6),
                cache=r.cache_status.value,
            )
        log.info("%s %s", self.method, code, extra={"fields": fields})


def connect_code_name(code: str) -> str:
    """Connect's spelling of a gRPC status code name: ``INVALID_ARGUMENT`` is
    ``invalid_argument``, ``CANCELLED`` is ``canceled``."""
    return "canceled" if code == "CANCELLED" else code.lower()
