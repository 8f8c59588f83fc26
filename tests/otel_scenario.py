"""The reference side of the OpenTelemetry conformance suite (tests/otel_conformance.py): the
stock OpenTelemetry SDK, configured only by the environment, doing what one Analyze RPC does
to telemetry.

Run as a script with one JSON argument: ``{"carrier": {...}, "linger_s": 0, "wait": false}``.
The SDK is set up by ``_initialize_components()``, the call ``opentelemetry-instrument`` makes
(through the distro's configurator) and nothing else, so every variable means what the stock
SDK makes of it. Then: a SERVER span named like the gateway's, under the context the global
propagator extracts from ``carrier`` (as the gateway extracts its caller's metadata), with two
children; many attributes, long values, events and links, for the span-limit rows; a counter
and a histogram recorded inside the span (trace-based exemplars); two log records through the
standard ``logging`` (the SDK's handler bridges them when
``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true``). ``linger_s`` waits before the
shutdown, so batch delays and export intervals can show; ``wait`` says ``ready`` on stderr and
waits for a line on stdin first (a Prometheus scrape). The shutdown flushes every provider.
Stdout carries only what console exporters print; stderr gets ``conformance-shutdown <time>``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    args: dict[str, Any] = json.loads(argv[1]) if len(argv) > 1 else {}
    from opentelemetry import _logs, metrics, propagate, trace
    from opentelemetry.sdk._configuration import _initialize_components

    # The SDK's own diagnostics stay out of the bridged logs: with a value length limit, the
    # bridge's record of the SDK's "truncating" warning is itself truncated, warns again, and
    # recursion ends the process (SDK 1.45). They still reach stderr.
    logging.getLogger("opentelemetry").propagate = False
    _initialize_components()

    tracer = trace.get_tracer("longread")
    meter = metrics.get_meter("longread")
    calls = meter.create_counter("longread.conformance.calls")
    duration = meter.create_histogram("longread.rpc.duration", unit="s")
    log = logging.getLogger("longread")

    parent = propagate.extract(args.get("carrier") or {})
    links = [
        trace.Link(
            trace.SpanContext(
                0x1234 + i, 0x99 + i, is_remote=True, trace_flags=trace.TraceFlags(1)
            ),
            {"link.index": i},
        )
        for i in range(4)
    ]
    attrs: dict[str, Any] = {
        "rpc.system": "grpc",
        "rpc.service": "longread.v1.AnalysisService",
        "rpc.method": "Analyze",
        "longread.note": "x" * 300,
    }
    attrs.update({f"longread.extra.{i}": f"value number {i}" for i in range(8)})
    with tracer.start_as_current_span(
        "longread.v1.AnalysisService/Analyze",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes=attrs,
        links=links,
    ) as span:
        for i in range(4):
            span.add_event(f"event {i}", {"event.index": i, "event.text": "y" * 100})
        with tracer.start_as_current_span("plan", attributes={"longread.plan.strategy": "single"}):
            pass
        with tracer.start_as_current_span(
            "chat gpt-4.1-mini",
            kind=trace.SpanKind.CLIENT,
            attributes={"gen_ai.request.model": "gpt-4.1-mini", "gen_ai.provider.name": "openai"},
        ):
            calls.add(1, {"model": "gpt-4.1-mini"})
            duration.record(0.25, {"rpc.method": "Analyze"})
        log.warning("analyzed a document")
        log.warning("analysis done")
        span.set_attribute("rpc.grpc.status_code", 0)

    if args.get("wait"):
        print("ready", file=sys.stderr, flush=True)
        sys.stdin.readline()
    time.sleep(float(args.get("linger_s") or 0))
    print(f"conformance-shutdown {time.time()}", file=sys.stderr, flush=True)
    for provider in (
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    ):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
