"""The OpenTelemetry conformance suite: every SDK environment variable for traces, metrics and
logs, run against the stock SDK (the reference) and against the gateway, which must agree.

A :class:`Row` is one setting: the environment it adds to :data:`BASE_ENV` and the
:class:`Check`\\ s that say what to compare. Each row runs twice, at the same time:

- the reference: ``tests/otel_scenario.py`` in a subprocess, the stock SDK set up by
  ``_initialize_components()`` from the environment alone, as ``opentelemetry-instrument``
  does, making a server span, metrics and log records;
- the gateway: ``longread serve`` in a subprocess with the same environment and
  :data:`GATEWAY_TOML` (the least a user writes to turn telemetry on), one Analyze RPC through
  the Python client (the row's carrier as gRPC metadata), then SIGTERM, whose graceful
  shutdown flushes.

Each side has its own :class:`~tests.otel_receiver.Receiver`; the environment's ``{grpc}``,
``{grpc_b}``, ``{http}``, ``{grpc_tls}``, ``{http_tls}``, ``{prom}`` and ``{certs}`` become that
side's ports and the test certificates' folder. A check is a function of what one side did (an
:class:`Observation`: the requests received, stdout, when the shutdown began, a Prometheus
scrape) and compares a property, not the telemetry itself: the scenarios' spans differ, but
both must, say, keep every attribute value within the limit. A property that needs data
says ``nothing received`` when there is none, so an empty side never agrees by accident.

``python -m tests.otel_conformance [ROW_ID...]`` prints the table as Markdown (the README's);
tests/integration/test_otel_conformance.py asserts each row. To add a row, add a ``row(...)``
call to ``_rows``: an id, the variable and value as the table shows them, the environment,
and the checks (reuse the probes below, or write one: a function of an Observation returning
a comparable value, NOTHING when it has nothing to judge).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from longread.client import Client

from tests.certs import make_certs
from tests.otel_receiver import SIGNALS, Received, Receiver
from tests.redis_server import free_port

SCENARIO = Path(__file__).with_name("otel_scenario.py")
NOTHING = "nothing received"

# What every row starts from, on both sides. The exporters are named because the SDK itself
# defaults to none (it is opentelemetry-distro that defaults them to otlp); the logging
# variable has the SDK bridge the standard ``logging`` to its log records.
BASE_ENV: dict[str, str] = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{grpc}",
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
}

# The gateway's telemetry is off by default: these two switches are what a user adds to the
# standard variables. Where and how to export is left to the variables. The rest is test
# plumbing: no drain delay on SIGTERM, and one emulator for every gateway of the run (an
# embedded one costs each gateway a quarter of its start-up CPU).
GATEWAY_TOML = """\
[telemetry]
traces = true
metrics = true

[server]
drain_delay_s = 0
grace_s = 2

[[upstreams]]
name = "openai"
kind = "openai"
base_url = "{sandbox}/v1"
api_key = "sandbox"
"""

# Diagnosis only (``python -m tests.otel_conformance --endpoint-in-toml``), never in the
# tests: also write the side's OTLP endpoint into the TOML (``telemetry.otlp_endpoint``), for
# a gateway that does not read it from the variables, to see which other variables it honours.
ENDPOINT_IN_TOML = False


def gateway_toml(env: Mapping[str, str], sandbox: str) -> str:
    toml = GATEWAY_TOML.replace("{sandbox}", sandbox)
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not (ENDPOINT_IN_TOML and endpoint):
        return toml
    return toml.replace("[telemetry]\n", f"[telemetry]\notlp_endpoint = {json.dumps(endpoint)}\n")


# A remote parent, as a caller would send it in each propagation format.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}
TRACEPARENT_UNSAMPLED = {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"}
B3_SINGLE = {"b3": f"{TRACE_ID}-{SPAN_ID}-1"}
B3_MULTI = {"x-b3-traceid": TRACE_ID, "x-b3-spanid": SPAN_ID, "x-b3-sampled": "1"}

PROCESS_WAIT_S = 40.0  # a side that has not exited by then is killed


@dataclass
class Observation:
    """What one side did, as the receiver and the process's outputs saw it."""

    side: str  # "reference" or "gateway"
    requests: list[Received] = field(default_factory=list)
    grpc_compressed: list[tuple[str, bool]] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    shutdown_at: float = 0.0  # when the shutdown (the flush) began
    scrape: str | None = None  # the Prometheus endpoint's text, when the row scrapes
    error: str = ""  # the harness could not run this side as intended (start, RPC, scrape)

    def of(self, signal_: str) -> list[Received]:
        return [r for r in self.requests if r.signal == signal_]


@dataclass(frozen=True)
class Check:
    """One compared property: ``what`` for the table, ``probe`` computes it from one side."""

    what: str
    probe: Callable[[Observation], object]


@dataclass(frozen=True)
class Row:
    """One setting of the table. ``env`` is added to BASE_ENV (a value of None removes the
    variable); ``carrier`` is the caller's propagation headers (the reference extracts them,
    the gateway gets them as metadata); ``tls``/``mutual`` add the TLS listeners; ``stall_s``
    holds every export; ``linger_s`` waits between the work and the shutdown; ``scrape``
    reads the Prometheus endpoint ``{prom}`` before the shutdown."""

    id: str
    variable: str
    value: str
    env: Mapping[str, str | None]
    checks: tuple[Check, ...]
    carrier: Mapping[str, str] = field(default_factory=dict)
    tls: bool = False
    mutual: bool = False
    stall_s: float = 0.0
    linger_s: float = 0.0
    scrape: bool = False


@dataclass
class CheckResult:
    what: str
    reference: object
    gateway: object

    @property
    def agree(self) -> bool:
        return self.reference == self.gateway


@dataclass
class RowResult:
    row: Row
    reference: Observation
    gateway: Observation
    checks: list[CheckResult]
    seconds: float

    @property
    def agree(self) -> bool:
        return all(c.agree for c in self.checks)

    def explain(self) -> str:
        lines = [f"{self.row.id}: {self.row.variable}={self.row.value}"]
        for c in self.checks:
            mark = "ok" if c.agree else "DIFFERS"
            lines.append(f"  {c.what}: reference {c.reference!r}, gateway {c.gateway!r} ({mark})")
        for o in (self.reference, self.gateway):
            if o.error or o.exit_code != 0:
                tail = "\n    ".join(o.stderr.strip().splitlines()[-6:])
                lines.append(f"  {o.side}: exit {o.exit_code} {o.error}\n    {tail}")
        return "\n".join(lines)


# --- the properties ---


def ran(o: Observation) -> object:
    """Both sides must have run to the end: started, served or scraped, exited 0."""
    return "exit 0" if o.exit_code == 0 and not o.error else f"exit {o.exit_code} {o.error}".strip()


def connected(o: Observation) -> object:
    """Which gRPC listeners the side connected to, requests or not (a failed handshake)."""
    return ",".join(sorted(k for k, n in o.connections.items() if n)) or "none"


def signals(o: Observation) -> object:
    got = {r.signal for r in o.requests if r.signal}
    return ",".join(s for s in SIGNALS if s in got) or NOTHING


def where(o: Observation) -> object:
    """Each signal's listener and path: ``traces@grpc_b``, ``logs@http/v1/logs``."""
    out: list[str] = []
    for s in SIGNALS:
        places = sorted({f"{r.listener}{r.path if r.transport == 'http' else ''}" for r in o.of(s)})
        out.extend(f"{s}@{p}" for p in places)
    unknown = sorted({f"{r.listener}{r.path}" for r in o.requests if not r.signal})
    out.extend(f"?@{p}" for p in unknown)
    return " ".join(out) or NOTHING


def header(name: str) -> Callable[[Observation], object]:
    def probe(o: Observation) -> object:
        out: list[str] = []
        for s in SIGNALS:
            values = sorted({r.headers.get(name, "-") for r in o.of(s)})
            out.extend(f"{s}={v}" for v in values)
        return " ".join(out) or NOTHING

    return probe


def http_encoding(o: Observation) -> object:
    out: list[str] = []
    for s in SIGNALS:
        values = sorted({r.content_encoding or "identity" for r in o.of(s)})
        out.extend(f"{s}={v}" for v in values)
    return " ".join(out) or NOTHING


def grpc_compression(o: Observation) -> object:
    """Per gRPC listener: whether its messages arrived compressed."""
    by: dict[str, set[str]] = {}
    for listener, compressed in o.grpc_compressed:
        by.setdefault(listener, set()).add("gzip" if compressed else "identity")
    return " ".join(f"{k}={'+'.join(sorted(v))}" for k, v in sorted(by.items())) or NOTHING


def abandoned(o: Observation) -> object:
    """Per signal: whether the exporter gave up on the stalled receiver (before the stall
    ended) or waited for its answer."""
    out: list[str] = []
    for s in SIGNALS:
        got = o.of(s)
        if got:
            out.append(f"{s}={'gave up' if any(r.abandoned for r in got) else 'waited'}")
    return " ".join(out) or NOTHING


def resource_values(key: str) -> Callable[[Observation], object]:
    def probe(o: Observation) -> object:
        values = {str(res.get(key)) for r in o.requests for res in r.resources()}
        return ",".join(sorted(values)) or NOTHING

    return probe


def spans_received(o: Observation) -> object:
    """Whether spans arrived, once the other signals show that the side exports at all."""
    if not o.requests:
        return NOTHING
    return any(r.spans() for r in o.requests)


def continues_carrier(o: Observation) -> object:
    """A span is the child of the carrier's span, in its trace."""
    spans = [s for r in o.requests for s in r.spans()]
    if not spans:
        return NOTHING
    return any(s.trace_id.hex() == TRACE_ID and s.parent_span_id.hex() == SPAN_ID for s in spans)


def before_shutdown(signal_: str) -> Callable[[Observation], object]:
    """Whether ``signal_`` was exported while the process ran (a schedule), not only by
    the flush at shutdown."""

    def probe(o: Observation) -> object:
        got = o.of(signal_)
        if not got:
            return NOTHING
        return any(r.at < o.shutdown_at for r in got)

    return probe


def at_most_per_request(signal_: str, limit: int) -> Callable[[Observation], object]:
    def count(r: Received) -> int:
        return len(r.spans()) + len(r.log_records())

    def probe(o: Observation) -> object:
        got = o.of(signal_)
        if not got:
            return NOTHING
        return max(count(r) for r in got) <= limit

    return probe


def span_limit(measure: Callable[[Any], int], limit: int) -> Callable[[Observation], object]:
    def probe(o: Observation) -> object:
        spans = [s for r in o.requests for s in r.spans()]
        if not spans:
            return NOTHING
        return max(measure(s) for s in spans) <= limit

    return probe


def longest_string(span: Any) -> int:
    """The longest string attribute value of a span, its events and its links."""
    kvs = list(span.attributes)
    for part in (*span.events, *span.links):
        kvs.extend(part.attributes)
    return max((len(kv.value.string_value) for kv in kvs), default=0)


def longest_span_string(span: Any) -> int:
    """The longest string attribute value of a span itself (not its events' or links')."""
    return max((len(kv.value.string_value) for kv in span.attributes), default=0)


def exemplars(o: Observation) -> object:
    metrics = [m for r in o.requests for m in r.metrics()]
    if not metrics:
        return NOTHING
    for m in metrics:
        kind = m.WhichOneof("data")
        if kind is None:
            continue
        data = getattr(m, kind)
        if any(len(p.exemplars) for p in getattr(data, "data_points", ())):
            return True
    return False


def console(o: Observation) -> object:
    """What the console exporters printed: the kinds of JSON object on stdout."""
    kinds: set[str] = set()
    decoder = json.JSONDecoder()
    text = o.stdout
    for m in re.finditer(r"^\{", text, re.M):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if "context" in obj and "kind" in obj:
            kinds.add("traces")
        elif "resource_metrics" in obj:
            kinds.add("metrics")
        elif "severity_number" in obj or "severity_text" in obj:
            kinds.add("logs")
    return ",".join(s for s in SIGNALS if s in kinds) or "nothing printed"


def scraped(o: Observation) -> object:
    """A metric of the program's own on the Prometheus endpoint (not the client library's
    python_/process_ collectors, nor target_info)."""
    if o.scrape is None:
        return "no endpoint"
    names = {
        line.split("{")[0].split(" ")[0]
        for line in o.scrape.splitlines()
        if line and not line.startswith("#")
    }
    own = {n for n in names if not n.startswith(("python_", "process_", "target_info"))}
    return bool(own)


# --- the table ---

SIGNALS_RECEIVED = Check("signals received over OTLP", signals)
WHERE = Check("where each signal arrived", where)
SPANS = Check("spans received", spans_received)
CONTINUES = Check("a span continues the carrier's trace", continues_carrier)
CONSOLE = Check("console output on stdout", console)
CONNECTED = Check("gRPC listeners it connected to", connected)


def _rows() -> list[Row]:
    rows: list[Row] = []

    def row(
        id: str, variable: str, value: str, env: Mapping[str, str | None], *checks: Check, **kw: Any
    ) -> None:
        rows.append(Row(id, variable, value, env, (Check("ran", ran), *checks), **kw))

    # The base: every signal over OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT.
    row("baseline", "(base environment)", "otlp, grpc", {}, SIGNALS_RECEIVED, WHERE)

    # Resource.
    svc = Check("service.name of every resource", resource_values("service.name"))
    deployment = Check(
        "deployment.environment of every resource", resource_values("deployment.environment")
    )
    row(
        "service-name",
        "OTEL_SERVICE_NAME",
        "conformance-svc",
        {"OTEL_SERVICE_NAME": "conformance-svc"},
        svc,
    )
    attrs = "service.name=from-attrs,deployment.environment=conf%20test"
    row(
        "resource-attributes",
        "OTEL_RESOURCE_ATTRIBUTES",
        attrs,
        {"OTEL_RESOURCE_ATTRIBUTES": attrs},
        svc,
        deployment,
    )
    row(
        "service-name-wins",
        "OTEL_SERVICE_NAME + OTEL_RESOURCE_ATTRIBUTES",
        "svc-var + service.name=svc-attr",
        {"OTEL_SERVICE_NAME": "svc-var", "OTEL_RESOURCE_ATTRIBUTES": "service.name=svc-attr"},
        svc,
    )

    # The SDK switched off.
    row(
        "sdk-disabled",
        "OTEL_SDK_DISABLED",
        "true",
        {"OTEL_SDK_DISABLED": "true"},
        SIGNALS_RECEIVED,
        CONNECTED,
    )

    # Samplers: no parent unless the row gives a carrier.
    samplers: list[tuple[str, str | None, dict[str, str], str]] = [
        ("always_on", None, {}, ""),
        ("always_off", None, {}, ""),
        ("traceidratio", "1", {}, ""),
        ("traceidratio", "0", {}, ""),
        ("traceidratio", "0", TRACEPARENT, "sampled parent"),
        ("parentbased_always_on", None, {}, ""),
        ("parentbased_always_on", None, TRACEPARENT_UNSAMPLED, "unsampled parent"),
        ("parentbased_always_off", None, {}, ""),
        ("parentbased_always_off", None, TRACEPARENT, "sampled parent"),
        ("parentbased_traceidratio", "0", {}, ""),
        ("parentbased_traceidratio", "0", TRACEPARENT, "sampled parent"),
    ]
    for name, arg, carrier, note in samplers:
        env = {"OTEL_TRACES_SAMPLER": name}
        value = name
        if arg is not None:
            env["OTEL_TRACES_SAMPLER_ARG"] = arg
            value += f", ARG={arg}"
        if note:
            value += f" ({note})"
        rid = "sampler-" + name.replace("_", "-") + (f"-{arg}" if arg else "")
        rid += "-" + note.replace(" ", "-") if note else ""
        row(rid, "OTEL_TRACES_SAMPLER(_ARG)", value, env, SPANS, carrier=carrier)

    # Propagators: which carrier continues the trace.
    propagators: list[tuple[str, dict[str, str], str]] = [
        ("tracecontext", TRACEPARENT, "traceparent"),
        ("baggage", TRACEPARENT, "traceparent"),
        ("b3", B3_SINGLE, "b3"),
        ("b3multi", B3_MULTI, "x-b3-*"),
        ("tracecontext", B3_SINGLE, "b3"),
        ("none", TRACEPARENT, "traceparent"),
    ]
    for name, carrier, what in propagators:
        rid = f"propagators-{name}-{what.replace('x-b3-*', 'b3multi')}"
        value = f"{name} (caller sends {what})"
        row(rid, "OTEL_PROPAGATORS", value, {"OTEL_PROPAGATORS": name}, CONTINUES, carrier=carrier)

    # Exporter selection: each of none, console and otlp,console once per signal, in three
    # rows (each signal's choice is independent of the others').
    choices = [
        ("none", "console", "otlp,console"),
        ("console", "otlp,console", "none"),
        ("otlp,console", "none", "console"),
    ]
    for traces, metrics_, logs in choices:
        row(
            f"exporters-{traces}-{metrics_}-{logs}".replace(",", "+"),
            "OTEL_{TRACES,METRICS,LOGS}_EXPORTER",
            f"{traces} / {metrics_} / {logs}",
            {
                "OTEL_TRACES_EXPORTER": traces,
                "OTEL_METRICS_EXPORTER": metrics_,
                "OTEL_LOGS_EXPORTER": logs,
            },
            SIGNALS_RECEIVED,
            CONSOLE,
        )
    row(
        "metrics-exporter-prometheus",
        "OTEL_METRICS_EXPORTER + OTEL_EXPORTER_PROMETHEUS_HOST/PORT",
        "prometheus, 127.0.0.1:{free port}",
        {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "{prom}",
        },
        SIGNALS_RECEIVED,
        Check("a metric of its own on the scrape", scraped),
        scrape=True,
    )

    # Endpoints and protocols.
    http = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{http}",
    }
    row(
        "protocol-http",
        "OTEL_EXPORTER_OTLP_PROTOCOL + _ENDPOINT",
        "http/protobuf, http://host:port",
        http,
        WHERE,
    )
    row(
        "endpoint-http-base-path",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://host:port/base/ (http/protobuf)",
        {**http, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{http}/base/"},
        WHERE,
    )
    row(
        "protocol-grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "grpc",
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        WHERE,
    )
    row(
        "endpoint-per-signal-only",
        "OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT (+ _LOGS_PROTOCOL)",
        "each signal its own, no general endpoint; logs http/protobuf",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": None,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:{grpc}",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:{grpc_b}",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:{http}/v1/logs",
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
        },
        WHERE,
    )
    row(
        "endpoint-per-signal-over-general",
        "OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT + _{TRACES,METRICS}_PROTOCOL",
        "traces http/protobuf to /custom/traces (as is), metrics grpc elsewhere",
        {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:{http}/custom/traces",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:{grpc_b}",
        },
        WHERE,
    )
    row(
        "endpoint-logs-http-path",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT + _LOGS_PROTOCOL",
        "http/protobuf to /custom/logs (as is)",
        {
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:{http}/custom/logs",
        },
        WHERE,
    )

    # Headers.
    hdr = Check("x-conformance header per signal", header("x-conformance"))
    auth = Check("authorization header per signal", header("authorization"))
    headers = "x-conformance=all%20signals,authorization=Bearer%20t0ken"
    row(
        "headers-grpc",
        "OTEL_EXPORTER_OTLP_HEADERS",
        headers + " (grpc)",
        {"OTEL_EXPORTER_OTLP_HEADERS": headers},
        hdr,
        auth,
    )
    row(
        "headers-http",
        "OTEL_EXPORTER_OTLP_HEADERS",
        headers + " (http/protobuf)",
        {**http, "OTEL_EXPORTER_OTLP_HEADERS": headers},
        hdr,
        auth,
    )
    row(
        "headers-per-signal",
        "OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_HEADERS",
        "x-conformance=<signal> over the general one",
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "x-conformance=general",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-conformance=traces",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-conformance=metrics",
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "x-conformance=logs",
        },
        hdr,
    )

    # Compression.
    gz_grpc = Check("gRPC messages compressed, per listener", grpc_compression)
    gz_http = Check("Content-Encoding per signal", http_encoding)
    row(
        "compression-grpc",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "gzip (grpc)",
        {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
        gz_grpc,
    )
    row(
        "compression-http",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "gzip (http/protobuf)",
        {**http, "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
        gz_http,
    )
    row(
        "compression-traces-grpc",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "gzip, traces on their own port (grpc)",
        {
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:{grpc_b}",
        },
        gz_grpc,
    )
    row(
        "compression-per-signal-http",
        "OTEL_EXPORTER_OTLP_{METRICS,LOGS}_COMPRESSION",
        "gzip for metrics and logs (http/protobuf)",
        {
            **http,
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "gzip",
        },
        gz_http,
    )

    # Timeouts, against a receiver that holds each request 3 s (the SDK reads seconds).
    gave_up = Check("gave up on a receiver stalling 3 s", abandoned)
    row(
        "timeout-short-grpc",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "1 (grpc)",
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "1"},
        gave_up,
        stall_s=3,
    )
    row(
        "timeout-short-http",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "1 (http/protobuf)",
        {**http, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"},
        gave_up,
        stall_s=3,
    )
    row(
        "timeout-per-signal",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "1, the others 10 (grpc)",
        {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1", "OTEL_EXPORTER_OTLP_TIMEOUT": "10"},
        gave_up,
        stall_s=3,
    )

    # TLS: the receiver's certificate is signed by the test CA.
    grpc_tls = "https://localhost:{grpc_tls}"
    http_tls = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://localhost:{http_tls}",
    }
    ca = {"OTEL_EXPORTER_OTLP_CERTIFICATE": "{certs}/ca.pem"}
    client = {
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": "{certs}/client.key",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "{certs}/client.pem",
    }
    row(
        "certificate-grpc",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "the test CA, https:// endpoint (grpc)",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_tls, **ca},
        WHERE,
        tls=True,
    )
    row(
        "certificate-http",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "the test CA, https:// endpoint (http/protobuf)",
        {**http_tls, **ca},
        WHERE,
        tls=True,
    )
    row(
        "certificate-traces",
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "the test CA for traces only, their own https:// endpoint",
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": grpc_tls,
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "{certs}/ca.pem",
        },
        WHERE,
        tls=True,
    )
    row(
        "client-certificate-grpc",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY/_CLIENT_CERTIFICATE",
        "mutual TLS (grpc)",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_tls, **ca, **client},
        WHERE,
        tls=True,
        mutual=True,
    )
    row(
        "client-certificate-http",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY/_CLIENT_CERTIFICATE",
        "mutual TLS (http/protobuf)",
        {**http_tls, **ca, **client},
        WHERE,
        tls=True,
        mutual=True,
    )
    row(
        "client-certificate-missing",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY/_CLIENT_CERTIFICATE",
        "unset, the receiver requires one (grpc, TIMEOUT=1)",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_tls, **ca, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"},
        SIGNALS_RECEIVED,
        CONNECTED,
        tls=True,
        mutual=True,
    )
    row(
        "insecure-true",
        "OTEL_EXPORTER_OTLP_INSECURE",
        "true, endpoint host:port without a scheme (grpc)",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:{grpc}", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
        WHERE,
    )
    row(
        "insecure-unset",
        "OTEL_EXPORTER_OTLP_INSECURE",
        "unset, endpoint host:port without a scheme (grpc, TIMEOUT=1)",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:{grpc}", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"},
        SIGNALS_RECEIVED,
        CONNECTED,
    )

    # Batch span and log record processors and the periodic metric reader, each pair of
    # rows for the three at once (they are independent).
    early = (
        Check("spans exported before shutdown", before_shutdown("traces")),
        Check("metrics exported before shutdown", before_shutdown("metrics")),
        Check("log records exported before shutdown", before_shutdown("logs")),
    )
    row(
        "schedule-short",
        "OTEL_BSP_SCHEDULE_DELAY, OTEL_METRIC_EXPORT_INTERVAL, OTEL_BLRP_SCHEDULE_DELAY",
        "100 ms each, 1.5 s before shutdown",
        {
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
        },
        *early,
        linger_s=1.5,
    )
    row(
        "schedule-long",
        "OTEL_BSP_SCHEDULE_DELAY, OTEL_METRIC_EXPORT_INTERVAL, OTEL_BLRP_SCHEDULE_DELAY",
        "30000 ms each, 1.5 s before shutdown",
        {
            "OTEL_BSP_SCHEDULE_DELAY": "30000",
            "OTEL_METRIC_EXPORT_INTERVAL": "30000",
            "OTEL_BLRP_SCHEDULE_DELAY": "30000",
        },
        *early,
        linger_s=1.5,
    )
    one_span = Check("at most 1 span per export", at_most_per_request("traces", 1))
    one_log = Check("at most 1 log record per export", at_most_per_request("logs", 1))
    row(
        "max-export-batch-size",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        "1 each",
        {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "1"},
        one_span,
        one_log,
    )
    row(
        "max-queue-size",
        "OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BLRP_MAX_QUEUE_SIZE",
        "1 each (MAX_EXPORT_BATCH_SIZE=1 too: it may not exceed the queue)",
        {
            "OTEL_BSP_MAX_QUEUE_SIZE": "1",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
            "OTEL_BLRP_MAX_QUEUE_SIZE": "1",
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "1",
        },
        one_span,
        one_log,
    )
    row(
        "export-timeouts",
        "OTEL_BSP_EXPORT_TIMEOUT, OTEL_METRIC_EXPORT_TIMEOUT, OTEL_BLRP_EXPORT_TIMEOUT",
        "500 ms each, receiver stalling 3 s",
        {
            "OTEL_BSP_EXPORT_TIMEOUT": "500",
            "OTEL_METRIC_EXPORT_TIMEOUT": "500",
            "OTEL_BLRP_EXPORT_TIMEOUT": "500",
        },
        gave_up,
        stall_s=3,
    )
    for name in ("always_on", "always_off", "trace_based"):
        row(
            f"exemplar-filter-{name.replace('_', '-')}",
            "OTEL_METRICS_EXEMPLAR_FILTER",
            name,
            {"OTEL_METRICS_EXEMPLAR_FILTER": name},
            Check("some metric point carries an exemplar", exemplars),
        )

    # Span limits: compared as properties of every span received.
    def count(s: Any) -> int:
        return len(s.attributes)

    per_span = Check("attributes per span <= 3", span_limit(count, 3))
    row(
        "attribute-count-limit",
        "OTEL_ATTRIBUTE_COUNT_LIMIT",
        "3",
        {"OTEL_ATTRIBUTE_COUNT_LIMIT": "3"},
        per_span,
    )
    row(
        "span-attribute-count-limit",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        "3",
        {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3"},
        per_span,
    )
    row(
        "attribute-value-length-limit",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "8",
        {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "8"},
        Check("string values of spans, events, links <= 8", span_limit(longest_string, 8)),
    )
    row(
        "span-attribute-value-length-limit",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "8",
        {"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "8"},
        Check("string values of span attributes <= 8", span_limit(longest_span_string, 8)),
    )
    row(
        "span-event-link-count-limits",
        "OTEL_SPAN_EVENT_COUNT_LIMIT, OTEL_SPAN_LINK_COUNT_LIMIT",
        "1 each",
        {"OTEL_SPAN_EVENT_COUNT_LIMIT": "1", "OTEL_SPAN_LINK_COUNT_LIMIT": "1"},
        Check("events per span <= 1", span_limit(lambda s: len(s.events), 1)),
        Check("links per span <= 1", span_limit(lambda s: len(s.links), 1)),
    )
    return rows


ROWS: list[Row] = _rows()
ROWS_BY_ID: dict[str, Row] = {r.id: r for r in ROWS}
assert len(ROWS_BY_ID) == len(ROWS), "row ids must be unique"


# --- running a row ---

_certs_lock = threading.Lock()
_certs: dict[str, Path] = {}


def certificates() -> dict[str, Path]:
    """The test CA and certificates, made once per process."""
    with _certs_lock:
        if not _certs:
            _certs.update(make_certs(Path(tempfile.mkdtemp(prefix="longread-otel-certs-"))))
        return _certs


def side_env(row: Row, receiver: Receiver, prom: int) -> dict[str, str]:
    """The process environment of one side: nothing of the caller's but the basics, so no
    OTEL_* or vendor key of the machine running the tests leaks in, then BASE_ENV and the
    row's variables with this side's ports."""
    env = {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
    }
    places: dict[str, str] = {k: str(v) for k, v in receiver.ports.items()}
    places["prom"] = str(prom)
    places["certs"] = str(next(iter(receiver.certs.values())).parent) if receiver.certs else ""
    merged: dict[str, str | None] = {**BASE_ENV, **row.env}
    for key, value in merged.items():
        if value is not None:
            env[key] = value.format(**{k: places.get(k, "") for k in _PLACES})
    return env


_PLACES = ("grpc", "grpc_b", "http", "grpc_tls", "http_tls", "prom", "certs")


def _receiver(row: Row) -> Receiver:
    return Receiver(
        certs=certificates() if row.tls else None, mutual=row.mutual, stall_s=row.stall_s
    )


def _wait_for(
    path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float
) -> re.Match[str] | None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = re.search(pattern, path.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def _scrape(port: int) -> str | None:
    for _ in range(20):
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            time.sleep(0.1)
    return None


def _finish(
    proc: subprocess.Popen[bytes], o: Observation, out: Path, err: Path, rec: Receiver
) -> None:
    try:
        o.exit_code = proc.wait(PROCESS_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        o.error = f"did not exit within {PROCESS_WAIT_S:.0f} s"
    rec.settle(rec.stall_s + 2)
    o.requests = list(rec.requests)
    o.grpc_compressed = list(rec.grpc_compressed)
    o.connections = dict(rec.connections)
    o.stdout = out.read_text(errors="replace")
    o.stderr = err.read_text(errors="replace")


def run_reference(row: Row) -> Observation:
    o = Observation("reference")
    prom = free_port()
    with _receiver(row) as rec, tempfile.TemporaryDirectory(prefix="longread-otel-ref-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        args = json.dumps(
            {"carrier": dict(row.carrier), "linger_s": row.linger_s, "wait": row.scrape}
        )
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, str(SCENARIO), args],
                stdin=subprocess.PIPE,
                stdout=fo,
                stderr=fe,
                env=side_env(row, rec, prom),
            )
        if row.scrape and _wait_for(err, r"^ready$", proc, PROCESS_WAIT_S) is not None:
            o.scrape = _scrape(prom)
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(b"\n")
            proc.stdin.close()
        _finish(proc, o, out, err, rec)
        m = re.search(r"conformance-shutdown ([0-9.]+)", o.stderr)
        o.shutdown_at = float(m.group(1)) if m else 0.0
    return o


DOCUMENT = "The night shift logged three alarms. Each was checked and cleared by dawn. " * 20


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    """The vendor emulator (``longread sandbox``) in a subprocess, for every gateway of a run:
    its base URL."""
    exe = Path(sys.executable).with_name("longread")
    with tempfile.TemporaryDirectory(prefix="longread-otel-sandbox-") as tmp:
        out = Path(tmp, "stdout")
        with out.open("wb") as fo:
            proc = subprocess.Popen(
                [str(exe), "sandbox", "--port", "0"],
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=subprocess.STDOUT,
            )
        try:
            m = _wait_for(out, r"listening on (http://[^\s]+)", proc, PROCESS_WAIT_S)
            if m is None:
                raise RuntimeError(f"longread sandbox did not start: {out.read_text()}")
            yield m.group(1)
        finally:
            proc.terminate()
            proc.wait(10)


def run_gateway(row: Row, sandbox: str) -> Observation:
    o = Observation("gateway")
    prom = free_port()
    with _receiver(row) as rec, tempfile.TemporaryDirectory(prefix="longread-otel-gw-") as tmp:
        toml = Path(tmp, "longread.toml")
        env = side_env(row, rec, prom)
        toml.write_text(gateway_toml(env, sandbox))
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        exe = Path(sys.executable).with_name("longread")
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [str(exe), "serve", "--config", str(toml), "--host", "127.0.0.1", "--port", "0"],
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                env=env,
            )
        m = _wait_for(out, r"longread serving on [^\s]+:(\d+)", proc, PROCESS_WAIT_S)
        if m is None:
            o.error = "did not start"
        else:
            port = int(m.group(1))
            try:
                with Client(
                    f"127.0.0.1:{port}", timeout=30, metadata=tuple(row.carrier.items())
                ) as c:
                    c.analyze(DOCUMENT, "What happened during the night shift?")
            except grpc.RpcError as e:
                o.error = f"Analyze failed: {e.code()}"
            if row.scrape:
                o.scrape = _scrape(prom)
            time.sleep(row.linger_s)
        o.shutdown_at = time.time()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _finish(proc, o, out, err, rec)
    return o


def run_row(row: Row, sandbox: str, sides: ThreadPoolExecutor) -> RowResult:
    """Both sides of ``row`` at once, then each check on each side."""
    start = time.monotonic()
    ref_f = sides.submit(run_reference, row)
    gw_f = sides.submit(run_gateway, row, sandbox)
    ref, gw = ref_f.result(), gw_f.result()
    checks = [CheckResult(c.what, c.probe(ref), c.probe(gw)) for c in row.checks]
    return RowResult(row, ref, gw, checks, time.monotonic() - start)


def run_rows(rows: Sequence[Row], parallel: int = 3) -> dict[str, RowResult]:
    """Every row, ``parallel`` rows at a time (both sides of a row run together). A side
    spends much of its time waiting (on sockets, batch delays, stalled receivers, the
    shutdown), so a few rows at once keep two cores busy."""
    with (
        emulator() as sandbox,
        ThreadPoolExecutor(2 * parallel) as sides,
        ThreadPoolExecutor(parallel) as rows_pool,
    ):
        futures = {r.id: rows_pool.submit(run_row, r, sandbox, sides) for r in rows}
        return {rid: f.result() for rid, f in futures.items()}


# --- the table, as Markdown ---


def _cell(value: object) -> str:
    text = str(value).replace("|", "\\|")
    return f"`{text}`" if text else ""


def markdown(results: Iterable[RowResult]) -> str:
    lines = [
        "| variable | value | compared | reference (SDK) | gateway | agree |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for c in r.checks:
            if c.what == "ran" and c.agree:
                continue  # both ran: the row's own properties say the rest
            lines.append(
                f"| `{r.row.variable}` | {r.row.value} | {c.what} | {_cell(c.reference)} | "
                f"{_cell(c.gateway)} | {'yes' if c.agree else '**no**'} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    global ENDPOINT_IN_TOML
    args = list(argv)
    if "--endpoint-in-toml" in args:
        args.remove("--endpoint-in-toml")
        ENDPOINT_IN_TOML = True
    chosen = [ROWS_BY_ID[a] for a in args] if args else ROWS
    start = time.monotonic()
    results = run_rows(chosen)
    print(markdown(results[r.id] for r in chosen))
    agree = sum(r.agree for r in results.values())
    print(
        f"\n{agree} of {len(results)} rows agree ({time.monotonic() - start:.0f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
