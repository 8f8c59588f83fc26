"""A lean OpenTelemetry tracer: the OpenTelemetry trace API, implemented for the hot path.

Why not the SDK's ``TracerProvider``: a cache-miss Analyze is a few milliseconds of the
gateway's CPU, and the SDK's spans (locks around attributes, a processor chain, a ReadableSpan
copy at the end, then a tree of protobuf objects to encode) cost a multiple of the 5 % budget at
100 % sampling (``bench.tracing_cost`` and ``bench.telemetry`` measure it). These spans are
plain slotted objects: attributes in a dict, ended spans handed to the sinks as they are, and
encoded by ``telemetry.encode`` straight from these objects.

It is still OpenTelemetry wherever a user can tell: spans are ``opentelemetry.trace.Span``s
carried in the API's context, so ``propagate.inject``/``extract``, ``use_span``,
``get_current_span`` and instrumentations (httpx, Redis) given this provider work unchanged;
sampling is any SDK ``Sampler`` (the standard ones decided without a call, any other asked
for every span, as the SDK does); the SDK's ``SpanLimits`` apply; and the SDK's own span
processors can be added (:meth:`LeanTracerProvider.add_span_processor`): they see each span
start, and each ended span as an SDK ``ReadableSpan`` on a thread of their own, so no
processor's exporter ever runs on the event loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from contextvars import ContextVar, Token
from typing import Any, Protocol

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

from longread_server.telemetry import redact

log = logging.getLogger(__name__)

# A finished span as plain values, as the OTLP batcher queues it: trace id, span id, trace
# state, parent span id (0: none), parent is remote, name, kind (SpanKind's value), start,
# end, attributes, dropped attributes, events, dropped events, links, dropped links, status
# code (StatusCode's value), status description, scope (a ``scope_key``). Spans wait for export
# for up to the batcher's delay (seconds), long enough for the garbage collector to promote
# whatever they hold to its older generations and scan it again in each collection of those:
# the tuple is one object to scan, where the span object came with its context and lists
# (and, from the next full collection on, its dict of plain values is not scanned at all).
FlatSpan = tuple[
    int,
    int,
    "TraceState | None",
    int,
    bool,
    str,
    int,
    int,
    int,
    Mapping[str, Any],
    int,
    Sequence[Event],
    int,
    Sequence[Link],
    int,
    int,
    str,
    int,
]

_scopes: list[tuple[Resource, InstrumentationScope | None]] = []
_scope_keys: dict[tuple[int, int], int] = {}
_scopes_lock = threading.Lock()


def scope_key(resource: Resource, scope: InstrumentationScope | None) -> int:
    """A small int standing for (resource, scope) in flat spans. Registered for good: a
    process has a handful (one per tracer)."""
    ident = (id(resource), id(scope))
    key = _scope_keys.get(ident)
    if key is None:
        with _scopes_lock:
            key = _scope_keys.get(ident)
            if key is None:
                _scopes.append((resource, scope))  # kept alive: the ids stay theirs
                key = _scope_keys[ident] = len(_scopes) - 1
    return key


def scope_of(key: int) -> tuple[Resource, InstrumentationScope | None]:
    return _scopes[key]


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
# Attribute values kept as they are; anything else goes through _clean.
_PRIMITIVE = frozenset((str, int, bool, float))
_STRINGS = frozenset((str,))
_getrandbits = random.getrandbits
# The context key the trace API keeps the current span under (it carries a random suffix).
(_SPAN_KEY,) = trace.set_span_in_context(trace.INVALID_SPAN, context_api.Context()).keys()
# The API's current context is a ContextVar (its default runtime context): read and set it
# directly, a few calls less per span. Any other runtime context goes through the API.
_var = getattr(getattr(context_api, "_RUNTIME_CONTEXT", None), "_current_context", None)
if isinstance(_var, ContextVar):
    _get_context: Callable[[], context_api.Context] = _var.get
    _set_context: Callable[[context_api.Context], Token[context_api.Context]] = _var.set
else:  # another runtime context configured (OTEL_PYTHON_CONTEXT)
    _get_context, _set_context = context_api.get_current, context_api.attach


def attach_span(
    span: trace.Span, context: context_api.Context | None = None
) -> Token[context_api.Context]:
    """``context.attach(trace.set_span_in_context(span, context))``, undone by
    :func:`detach`."""
    base = _get_context() if context is None else context
    return _set_context(context_api.Context({**base, _SPAN_KEY: span}))


_time_ns = time.time_ns


def _clean(value: Any) -> Any:
    """An attribute value as the SDK keeps it: primitives as they are, sequences as tuples,
    mappings copied, anything else as its ``str``."""
    t = type(value)
    if t is str or t is int or t is bool or t is float or t is bytes or value is None:
        return value
    if (t is list or t is tuple) and _STRINGS.issuperset(map(type, value)):
        return tuple(value)  # finish reasons and the like, without the ABC checks
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return tuple(_clean(v) for v in value)
    return str(value)


def _truncate(value: Any, limit: int) -> Any:
    """``value`` with every string in it cut to ``limit`` characters, as the SDK's
    attribute value length limit does (other types are left as they are)."""
    if type(value) is str:
        return value[:limit]
    if type(value) is tuple:
        return tuple(v[:limit] if type(v) is str else v for v in value)
    return value


def _limited(attributes: types.Attributes, count: int, length: int | None) -> dict[str, Any]:
    """An event's or a link's attributes within the span limits: the first ``count``, their
    strings cut to ``length``."""
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if len(out) >= count:
            break
        value = _clean(value)
        out[key] = value if length is None else _truncate(value, length)
    return out


class SpanSink(Protocol):
    def on_end(self, span: LeanSpan) -> None: ...
    def force_flush(self, timeout_millis: int = 30000) -> bool: ...
    def shutdown(self) -> None: ...


class LeanSpan(trace.Span):
    """A recording span. Not thread-safe: a span belongs to the task that started it, as
    every span here does."""

    __slots__ = (
        "_attributes",
        "_context",
        "_events",
        "_links",
        "_name",
        "_status",
        "_tracer",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_time",
        "kind",
        "parent",
        "parent_id",
        "parent_remote",
        "span_id",
        "start_time",
        "state",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        state: TraceState | None,
        parent: SpanContext | None,
        parent_remote: bool,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link] | None,
        start_time: int,
        tracer: LeanTracer,
    ) -> None:
        self._name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.state = state
        # The SpanContext is made when asked for: most spans are leaves nobody asks.
        self._context: SpanContext | None = None
        self.parent = parent
        self.parent_id = 0 if parent is None else parent.span_id
        self.parent_remote = parent_remote
        self.kind = kind
        self._attributes: dict[str, Any] = {}
        # Most spans have no events or links: no list (a tracked object) until one is added.
        self._events: list[Event] | None = None
        self._links: list[Link] | None = None
        self.dropped_links = 0
        self._status = _UNSET
        self.start_time = start_time
        self.end_time: int | None = None
        self._tracer = tracer
        self.dropped_attributes = 0
        self.dropped_events = 0
        if attributes:
            self.set_attributes(attributes)
        for link in links or ():
            self.add_link(link.context, link.attributes)

    # ---- what exporters read (the names of the SDK's ReadableSpan) ----

    @property
    def name(self) -> str:
        return self._name

    @property
    def context(self) -> SpanContext:
        return self.get_span_context()

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes

    @property
    def events(self) -> Sequence[Event]:
        return self._events or ()

    @property
    def links(self) -> Sequence[Link]:
        return self._links or ()

    @property
    def status(self) -> Status:
        return self._status

    @property
    def resource(self) -> Resource:
        return self._tracer.provider.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    def readable(self) -> ReadableSpan:
        """This span as the SDK's ReadableSpan, for SDK exporters."""
        return ReadableSpan(
            name=self._name,
            context=self.get_span_context(),
            parent=self.parent,
            resource=self.resource,
            attributes=dict(self._attributes),
            events=tuple(self.events),
            links=tuple(self.links),
            kind=self.kind,
            status=self._status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=self._tracer.scope,
        )

    # ---- the trace API ----

    def get_span_context(self) -> SpanContext:
        ctx = self._context
        if ctx is None:
            ctx = self._context = SpanContext(
                self.trace_id, self.span_id, False, _SAMPLED, self.state
            )
        return ctx

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self.end_time is not None:
            return
        attrs = self._attributes
        tracer = self._tracer
        if len(attrs) + len(attributes) > tracer.max_attributes or tracer.max_length is not None:
            for key, value in attributes.items():
                self.set_attribute(key, value)
            return
        if "" not in attributes and _PRIMITIVE.issuperset(map(type, attributes.values())):
            attrs.update(attributes)  # the usual case, checked and copied without a loop
            return
        for key, value in attributes.items():
            if value is not None and key:
                attrs[key] = value if type(value) in _PRIMITIVE else _clean(value)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self.end_time is not None or value is None or not key:
            return
        attrs = self._attributes
        tracer = self._tracer
        if len(attrs) >= tracer.max_attributes and key not in attrs:
            self.dropped_attributes += 1
            return
        t = type(value)
        value = value if t is str or t is int or t is bool else _clean(value)
        if tracer.max_length is not None:
            value = _truncate(value, tracer.max_length)
        attrs[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            return
        tracer = self._tracer
        if self._events is None:
            self._events = []
        if len(self._events) >= tracer.max_events:
            self.dropped_events += 1
            return
        attrs = _limited(attributes, tracer.max_event_attributes, tracer.max_event_length)
        self._events.append(Event(name, attrs, timestamp or _time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self.end_time is None and context.is_valid:
            if self._links is None:
                self._links = []
            tracer = self._tracer
            if len(self._links) >= tracer.max_links:
                self.dropped_links += 1
                return
            attrs = _limited(attributes, tracer.max_link_attributes, tracer.max_event_length)
            self._links.append(Link(context, attrs))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final; UNSET never overrides; a description only goes with ERROR.
        if self.end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        content = self._tracer.provider.record_content
        attrs: dict[str, Any] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": redact.message(exception, content),
            "exception.stacktrace": redact.stacktrace(exception, content),
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def flat(self) -> FlatSpan:
        """This finished span as plain values (``FlatSpan``), for the OTLP batcher."""
        status = self._status
        if status is _UNSET:
            code, description = 0, ""
        else:
            code, description = status.status_code.value, status.description or ""
        return (
            self.trace_id,
            self.span_id,
            self.state,
            self.parent_id,
            self.parent_remote,
            self._name,
            self.kind._value_,
            self.start_time,
            self.end_time or 0,
            self._attributes,
            self.dropped_attributes,
            tuple(self._events) if self._events else (),
            self.dropped_events,
            tuple(self._links) if self._links else (),
            self.dropped_links,
            code,
            description,
            self._tracer.scope_key,
        )

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or _time_ns()
        for sink in self._tracer.sinks:
            sink.on_end(self)


class UnsampledSpan(trace.NonRecordingSpan):
    """A span the sampler left out: records nothing, and makes its SpanContext only when
    asked for it (to propagate it, or as the parent of a span from another tracer). Its
    children are left out too without going through the API (at a sampling ratio below
    100 %, most requests are made of these)."""

    def __init__(self, trace_id: int, span_id: int, state: TraceState | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.state = state
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        ctx = self._made
        if ctx is None:
            ctx = self._made = SpanContext(
                self.trace_id, self.span_id, False, _NOT_SAMPLED, self.state
            )
        return ctx

    def __repr__(self) -> str:
        return f"UnsampledSpan({self.get_span_context()!r})"


class LeanTracer(trace.Tracer):
    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self.provider = provider
        self.scope = scope
        self.scope_key = scope_key(provider.resource, scope)
        self.sinks = provider.sinks  # the provider's list: sinks added later are in it too
        self.starts = provider.starts  # the processors' on_start, likewise
        limits = provider.limits
        self.max_attributes: int = _bound(limits.max_span_attributes)
        self.max_length: int | None = limits.max_span_attribute_length
        self.max_events: int = _bound(limits.max_events)
        self.max_links: int = _bound(limits.max_links)
        self.max_event_attributes: int = _bound(limits.max_event_attributes)
        self.max_link_attributes: int = _bound(limits.max_link_attributes)
        self.max_event_length: int | None = limits.max_attribute_length

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent_span = (_get_context() if context is None else context).get(_SPAN_KEY)
        span_id = _getrandbits(64) or 1
        provider = self.provider
        if provider.rule is None:  # a sampler of the user's: asked for every span
            span = self._ask_sampler(
                name, context, parent_span, span_id, kind, attributes, links, start_time
            )
        elif type(parent_span) is UnsampledSpan:  # left out by the sampler: so are its children
            # (true of every standard sampler: a child has its parent's trace id and flags)
            return UnsampledSpan(parent_span.trace_id, span_id, parent_span.state)
        elif type(parent_span) is LeanSpan:  # a span of ours: sampled, local (the usual case)
            span = LeanSpan(
                name,
                parent_span.trace_id,
                span_id,
                parent_span.state,
                parent_span.get_span_context(),
                False,
                kind,
                attributes,
                links,
                start_time or _time_ns(),
                self,
            )
        else:
            # Anything else in the context: the API's rule (not a span means no parent).
            if not isinstance(parent_span, trace.Span):
                parent_span = trace.INVALID_SPAN
            parent = parent_span.get_span_context()
            if parent.is_valid:
                trace_id, state = parent.trace_id, parent.trace_state or None
                if provider.parent_based:
                    sampled = parent.trace_flags.sampled
                else:
                    sampled = (trace_id & 0xFFFFFFFFFFFFFFFF) < provider.bound
            else:
                trace_id, state = _getrandbits(128) or 1, None
                sampled = (trace_id & 0xFFFFFFFFFFFFFFFF) < provider.bound
            if not sampled:
                return UnsampledSpan(trace_id, span_id, state)
            span = self._span(name, trace_id, span_id, state, parent, kind, attributes, links)
            if start_time:
                span.start_time = start_time
        if self.starts and isinstance(span, LeanSpan):
            for on_start in self.starts:
                on_start(span, context)
        return span

    def _ask_sampler(
        self,
        name: str,
        context: context_api.Context | None,
        parent_span: object,
        span_id: int,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link] | None,
        start_time: int | None,
    ) -> trace.Span:
        """A span as the SDK makes it with any sampler: the sampler decides, may add
        attributes and replace the trace state. A span it would only record (RECORD_ONLY) is
        left out: nothing here reads spans that are not exported."""
        if not isinstance(parent_span, trace.Span):
            parent_span = trace.INVALID_SPAN
        parent = parent_span.get_span_context()
        trace_id = parent.trace_id if parent.is_valid else _getrandbits(128) or 1
        result = self.provider.sampler.should_sample(
            context, trace_id, name, kind, attributes, links
        )
        state = result.trace_state or (parent.trace_state if parent.is_valid else None) or None
        if result.decision is not Decision.RECORD_AND_SAMPLE:
            return UnsampledSpan(trace_id, span_id, state)
        merged = {**(attributes or {}), **(result.attributes or {})}
        span = self._span(name, trace_id, span_id, state, parent, kind, merged, links)
        if start_time:
            span.start_time = start_time
        return span

    def _span(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        state: TraceState | None,
        parent: SpanContext,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link] | None,
    ) -> LeanSpan:
        """A sampled span under ``parent`` (INVALID_SPAN_CONTEXT: none)."""
        valid = parent.is_valid
        return LeanSpan(
            name,
            trace_id,
            span_id,
            state,
            parent if valid else None,
            valid and parent.is_remote,
            kind,
            attributes,
            links,
            _time_ns(),
            self,
        )

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return CurrentSpan(span, end_on_exit, record_exception, set_status_on_exception)


def detach(token: Token[context_api.Context]) -> None:
    """``opentelemetry.context.detach``, quietly: a span made current inside an async
    generator is detached wherever the generator is closed, and when that is another
    context (a Stream the client cancelled, finalized by the event loop) there is nothing
    to undo there. OpenTelemetry's own detach logs that case as an error with a traceback."""
    with suppress(ValueError):
        token.var.reset(token)


class CurrentSpan:
    """``trace.use_span`` as a plain context manager (no generator to create per span),
    detached with :func:`detach`. Works for any span, recording or not."""

    __slots__ = ("_current", "_end", "_record", "_set_status", "_token", "span")

    def __init__(
        self, span: trace.Span, end: bool, record: bool, set_status: bool, current: bool = True
    ) -> None:
        self.span = span
        self._end = end
        self._record = record
        self._set_status = set_status
        self._current = current  # False: a leaf span, nothing below needs it as the parent
        self._token: Token[context_api.Context] | None = None

    def __enter__(self) -> trace.Span:
        if self._current:
            self._token = attach_span(self.span)
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self._token is not None:
            detach(self._token)
        span = self.span
        if isinstance(exc, Exception) and span.is_recording():
            if self._record:
                span.record_exception(exc)
            if self._set_status:
                content = type(span) is LeanSpan and span._tracer.provider.record_content
                span.set_status(Status(StatusCode.ERROR, redact.describe(exc, content)))
        if self._end:
            span.end()


def _bound(limit: int | None) -> int:
    """A count limit of ``SpanLimits`` as a number (None: unlimited)."""
    return (1 << 62) if limit is None else limit


def sampling_rule(sampler: Sampler) -> tuple[int, bool] | None:
    """The decision of a standard sampler as (bound, parent_based): sample a new trace when
    its id's low 64 bits are under the bound (``TraceIdRatioBased``'s rule, ALWAYS_ON and
    ALWAYS_OFF its ends), and a child of a remote parent as the parent was sampled when
    parent-based, by the same bound otherwise. None for any other sampler (including a
    ``ParentBased`` with delegates of its own), which is then asked for every span."""
    parent_based = isinstance(sampler, ParentBased)
    if isinstance(sampler, ParentBased):
        # Its delegates are not public: read them defensively (another SDK version without
        # them only costs the fast path).
        delegates = vars(sampler)
        defaults = (
            delegates.get("_remote_parent_sampled") is ALWAYS_ON
            and delegates.get("_remote_parent_not_sampled") is ALWAYS_OFF
            and delegates.get("_local_parent_sampled") is ALWAYS_ON
            and delegates.get("_local_parent_not_sampled") is ALWAYS_OFF
        )
        root = delegates.get("_root")
        if not defaults or not isinstance(root, Sampler):
            return None
        sampler = root
    if sampler is ALWAYS_ON:
        return 1 << 64, parent_based
    if sampler is ALWAYS_OFF:
        return 0, parent_based
    if type(sampler) is TraceIdRatioBased:
        return sampler.bound, parent_based
    return None


class LeanTracerProvider(trace.TracerProvider):
    """Tracers for one gateway; ended spans go to its sinks."""

    def __init__(
        self,
        resource: Resource,
        sampler: Sampler | float = 1.0,
        limits: SpanLimits | None = None,
        *,
        record_content: bool = False,
    ) -> None:
        self.resource = resource
        # Exception messages on spans (telemetry.redact): only with content recording on.
        self.record_content = record_content
        if not isinstance(sampler, Sampler):  # a ratio of new traces
            sampler = ParentBased(TraceIdRatioBased(min(max(sampler, 0.0), 1.0)))
        self.sampler = sampler
        self.rule = sampling_rule(sampler)
        self.bound, self.parent_based = self.rule or (0, False)
        self.limits = limits or SpanLimits()
        self.sinks: list[SpanSink] = []
        self.starts: list[Callable[[LeanSpan, context_api.Context | None], None]] = []
        self._processors: ProcessorSink | None = None
        self._tracers: dict[tuple[str, str | None, str | None], LeanTracer] = {}
        self._lock = threading.Lock()

    def add_sink(self, sink: SpanSink) -> None:
        self.sinks.append(sink)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """An SDK span processor (``BatchSpanProcessor``, ``SimpleSpanProcessor``, one's own):
        ``on_start`` with the span as it starts, ``on_end`` with each ended span as a
        ``ReadableSpan``, on the processors' own thread (:class:`ProcessorSink`)."""
        if self._processors is None:
            self._processors = ProcessorSink()
            self.add_sink(self._processors)
        self._processors.processors.append(processor)
        self.starts.append(processor.on_start)  # type: ignore[arg-type]

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> trace.Tracer:
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        with self._lock:
            tracer = self._tracers.get(key)
            if tracer is None:
                scope = InstrumentationScope(
                    instrumenting_module_name,
                    instrumenting_library_version,
                    schema_url,
                    attributes,
                )
                tracer = self._tracers[key] = LeanTracer(self, scope)
            return tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(sink.force_flush(timeout_millis) for sink in self.sinks)

    def shutdown(self) -> None:
        for sink in self.sinks:
            sink.shutdown()


class ProcessorSink:
    """Hands ended spans to SDK span processors on a thread of its own.

    ``on_end`` only appends the span to a bounded queue (the oldest dropped, and counted, if
    the processors cannot keep up); the thread makes each an SDK ``ReadableSpan`` and calls
    every processor's ``on_end`` with it. A ``SimpleSpanProcessor`` exports right there, so
    its exporter runs on this thread, never on the event loop; a ``BatchSpanProcessor``
    queues it for its own."""

    def __init__(self, max_queue: int = 8192) -> None:
        self.processors: list[SpanProcessor] = []
        self._queue: deque[LeanSpan] = deque(maxlen=max_queue)
        self._max_queue = max_queue
        self.dropped = 0
        self._wake = threading.Condition()
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="longread-spans", daemon=True)
        self._thread.start()

    def on_end(self, span: LeanSpan) -> None:
        q = self._queue
        if len(q) == self._max_queue:
            self.dropped += 1
        q.append(span)
        if not self._busy:
            with self._wake:
                self._wake.notify_all()

    def _run(self) -> None:
        q = self._queue
        while True:
            with self._wake:
                self._busy = False
                self._wake.notify_all()  # a flush waiting for an empty queue
                while not q and not self._stop:
                    self._wake.wait()
                if not q and self._stop:
                    return
                self._busy = True
            while q:
                readable = q.popleft().readable()
                for processor in self.processors:
                    try:
                        processor.on_end(readable)
                    except Exception:  # one processor's fault must not stop the others
                        log.exception("span processor %r failed", processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._wake:
            self._wake.notify_all()
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self._wake.wait(left):
                    return False
        return all(p.force_flush(timeout_millis) for p in self.processors)

    def shutdown(self) -> None:
        self.force_flush()
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(5)
        for processor in self.processors:
            processor.shutdown()


def current_span(
    span: trace.Span,
    *,
    end_on_exit: bool = True,
    record_exception: bool = True,
    current: bool = True,
) -> CurrentSpan:
    """``trace.use_span`` for code that yields while the span is current (async
    generators): the same status and exception rules, detached quietly wherever it ends
    (:func:`detach`). ``current=False`` for a leaf span: ended and given its status the
    same way, without making it the parent of anything (a context switch less)."""
    return CurrentSpan(span, end_on_exit, record_exception, True, current)
