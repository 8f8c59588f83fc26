"""What the resilience stages report, and its OpenTelemetry recording.

Stages call a ``ResilienceObserver`` (a no-op by default, so unit tests need nothing) when a
rate limit makes a call wait or refuses it, when a call is retried, and when a breaker's state
is seen to change. ``MetricsObserver`` turns that into the gateway's metrics:

* ``longread.limiter.wait`` (histogram, s) by ``longread.limit`` (tenant, upstream);
* ``longread.resilience.rejections`` (counter) by ``longread.reason`` (rate_limited,
  over_capacity, circuit_open, state_unavailable) and ``longread.limit``/``longread.upstream``;
* ``longread.resilience.retries`` (counter) by upstream and ``error.type``;
* ``longread.resilience.hedges`` (counter) by upstream: hedged attempts started;
* ``longread.resilience.fallbacks`` (counter) by ``longread.reason`` (circuit_open,
  rate_limited, upstream_error, context_overflow), ``gen_ai.request.model`` (the model asked
  for, as upstream/model) and ``longread.fallback.model`` (the one sent to instead);
* gauges read at collection: ``longread.breaker.state`` (0 closed, 1 half-open, 2 open) and
  ``longread.concurrency.limit`` per upstream, ``longread.state.degraded`` (1 while Redis is
  failing and local state stands in); and a counter read at collection,
  ``longread.state.redis_errors`` (a total since start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from longread_server.telemetry import Instruments

BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}


class ResilienceObserver:
    """Receives the stages' reports; this base class ignores them."""

    def waited(self, limit: str, seconds: float) -> None:
        """A rate limit admitted a call after ``seconds`` (0: at once)."""

    def rejected(self, reason: str, where: str) -> None:
        """The gateway refused a call (``where``: the limit or upstream)."""

    def retried(self, upstream: str, error: str) -> None:
        """An attempt failed with ``error`` and is being retried."""

    def hedged(self, upstream: str) -> None:
        """An attempt had sent nothing for too long and a second one was started beside it."""

    def breaker(self, upstream: str, state: str) -> None:
        """``upstream``'s breaker was seen in ``state``."""

    def fell_back(self, reason: str, asked: str, sent_to: str) -> None:
        """A call asked of ``asked`` was sent to ``sent_to`` (both upstream/model)."""


NULL_OBSERVER = ResilienceObserver()

Gauge = Callable[[], Iterable[tuple[float, dict[str, str]]]]


class MetricsObserver(ResilienceObserver):
    """Records the reports as OpenTelemetry metrics (no-ops when metrics are off)."""

    def __init__(self, instruments: Instruments) -> None:
        self._inst = instruments
        meter = instruments.meter
        self._rejections = meter.create_counter(
            "longread.resilience.rejections",
            unit="{call}",
            description="Calls the gateway refused: rate limits, open circuits, state",
        )
        self._retries = meter.create_counter(
            "longread.resilience.retries", unit="{attempt}", description="Retried attempts"
        )
        self._hedges = meter.create_counter(
            "longread.resilience.hedges",
            unit="{attempt}",
            description="Hedged attempts: started beside an attempt that had not answered",
        )
        self._fallbacks = meter.create_counter(
            "longread.resilience.fallbacks",
            unit="{call}",
            description="Calls sent down their fallback chain, by reason and model",
        )
        self.breakers: dict[str, str] = {}
        instruments.observe(
            "longread.breaker.state",
            lambda: [
                (float(BREAKER_LEVEL.get(s, 0)), {"longread.upstream": u})
                for u, s in self.breakers.items()
            ],
            description="Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
        )

    def observe(
        self, name: str, gauge: Gauge, description: str, *, unit: str = "1", total: bool = False
    ) -> None:
        self._inst.observe(name, gauge, unit=unit, description=description, total=total)

    def waited(self, limit: str, seconds: float) -> None:
        self._inst.limiter_wait.record(seconds, {"longread.limit": limit})

    def rejected(self, reason: str, where: str) -> None:
        self._rejections.add(1, {"longread.reason": reason, "longread.where": where})

    def retried(self, upstream: str, error: str) -> None:
        self._retries.add(1, {"longread.upstream": upstream, "error.type": error})

    def hedged(self, upstream: str) -> None:
        self._hedges.add(1, {"longread.upstream": upstream})

    def breaker(self, upstream: str, state: str) -> None:
        self.breakers[upstream] = state

    def fell_back(self, reason: str, asked: str, sent_to: str) -> None:
        attrs = {
            "longread.reason": reason,
            "gen_ai.request.model": asked,
            "longread.fallback.model": sent_to,
        }
        self._fallbacks.add(1, attrs)
