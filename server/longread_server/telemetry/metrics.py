"""The gateway's metrics: its instruments, and the batch that hands recordings to the SDK.

With metrics off the instruments come from a no-op meter; with them on, from the gateway's
own ``MeterProvider`` (built in ``telemetry.setup``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import Attributes

# Buckets for seconds (operation duration, time to first token) and token counts, as the
# GenAI semantic conventions advise.
_SECONDS = [
    0.005,
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]


Record = Callable[[float, Attributes], None]


class MeasurementBatch:
    """Measurements held and handed to the SDK's instruments in batches.

    A recording costs the OpenTelemetry SDK real work (a frozenset of the attributes, locks,
    the aggregation), and an Analyze makes several. Done one by one amid each request's work
    it shows in the server's CPU per request (the README has the measured figures); done a
    few hundred at a time, the same code runs with its data in the CPU's caches. A recording
    here is one deque append; the batch goes to the SDK every ``size`` recordings (in the
    request that fills it) and at each collection (the gauge ``longread.telemetry.batched``,
    whose callback the SDK runs before it reads the instruments), so what readers export is
    complete. The attributes are read when the batch goes: a caller must not change a dict it
    recorded with (each call site builds its own).
    """

    def __init__(self, size: int = 256) -> None:
        self._items: deque[tuple[Record, float, Attributes]] = deque()
        self._size = size
        self._lock = threading.Lock()

    def add(self, to: Record, value: float, attributes: Attributes) -> None:
        items = self._items
        items.append((to, value, attributes))
        if len(items) >= self._size:
            self.flush(wait=False)  # a collection flushing meanwhile takes these too

    def flush(self, wait: bool = True) -> int:
        """Hands every held measurement to its instrument; returns how many."""
        if not self._lock.acquire(blocking=wait):
            return 0
        try:
            n, items = 0, self._items
            while items:
                to, value, attributes = items.popleft()
                to(value, attributes)
                n += 1
            return n
        finally:
            self._lock.release()


class _BatchedHistogram(metrics.Histogram):
    def __init__(self, inner: metrics.Histogram, batch: MeasurementBatch) -> None:
        self._record = inner.record
        self._batch = batch

    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._batch.add(self._record, amount, attributes)


class _BatchedCounter(metrics.Counter):
    def __init__(self, inner: metrics.Counter, batch: MeasurementBatch) -> None:
        self._add = inner.add
        self._batch = batch

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        self._batch.add(self._add, amount, attributes)


class Instruments:
    """Every metric the gateway records, created once per gateway. With ``batch``, the
    synchronous instruments record through it (see MeasurementBatch)."""

    def __init__(self, meter: metrics.Meter, batch: MeasurementBatch | None = None) -> None:
        self.meter = meter
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per model call, by gen_ai.token.type",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of one upstream model call attempt",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.time_to_first_token = meter.create_histogram(
            "longread.time_to_first_token",
            unit="s",
            description="From receiving a request to the first answer token sent",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.rpc_duration = meter.create_histogram(
            "longread.rpc.duration",
            unit="s",
            description="gRPC request duration by outcome",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        # Currencies are no UCUM unit: "USD" as the unit is exported to Prometheus verbatim
        # (``longread_cost_USD_total``). The name says the currency; the unit is an annotation
        # ({USD}), which the Prometheus exporter leaves out: ``longread_cost_usd_total``.
        self.cost = meter.create_counter(
            "longread.cost.usd",
            unit="{USD}",
            description="Cost of upstream calls in US dollars, by tenant and model",
        )
        self.upstream_errors = meter.create_counter(
            "longread.upstream.errors",
            unit="{error}",
            description="Failed upstream attempts by error kind",
        )
        self.limiter_wait = meter.create_histogram(
            "longread.limiter.wait",
            unit="s",
            description="Time spent waiting for rate limits",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.cache_requests = meter.create_counter(
            "longread.cache.requests",
            unit="{request}",
            description="Cache lookups by result (hit, miss, error)",
        )

        if batch is not None:
            self.token_usage = _BatchedHistogram(self.token_usage, batch)
            self.operation_duration = _BatchedHistogram(self.operation_duration, batch)
            self.time_to_first_token = _BatchedHistogram(self.time_to_first_token, batch)
            self.rpc_duration = _BatchedHistogram(self.rpc_duration, batch)
            self.limiter_wait = _BatchedHistogram(self.limiter_wait, batch)
            self.cost = _BatchedCounter(self.cost, batch)
            self.upstream_errors = _BatchedCounter(self.upstream_errors, batch)
            self.cache_requests = _BatchedCounter(self.cache_requests, batch)

            def flush(_: CallbackOptions) -> Iterable[Observation]:
                return [Observation(batch.flush())]

            meter.create_observable_gauge(
                "longread.telemetry.batched",
                [flush],
                unit="{measurement}",
                description="Measurements handed to the SDK at this collection",
            )

    def observe(
        self,
        name: str,
        callback: Callable[[], Iterable[tuple[float, dict[str, str]]]],
        unit: str = "1",
        description: str = "",
        *,
        total: bool = False,
    ) -> None:
        """Registers an instrument read at collection time: ``callback`` yields (value,
        attributes) pairs. A gauge (breaker state, cache bytes...), or with ``total`` an
        observable counter, for a count that only grows (evictions, errors): readers then see
        it as monotonic (a rate can be taken; Prometheus names it ``..._total``)."""

        def read(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, attrs) for v, attrs in callback()]

        make = self.meter.create_observable_counter if total else self.meter.create_observable_gauge
        make(name, [read], unit=unit, description=description)
