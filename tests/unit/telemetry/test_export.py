"""OTLP export: the span batcher against a real receiver, and the settings both signals'
exporters are built from."""

from __future__ import annotations

import gzip
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from longread_server.config import ConfigError, TelemetryConfig
from longread_server.telemetry import setup
from longread_server.telemetry.encode import flatten
from longread_server.telemetry.export import OtlpBatcher, OtlpSettings, metric_exporter
from longread_server.telemetry.tracing import LeanTracerProvider
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.certs import make_certs
from tests.unit.telemetry.support import sample_spans


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, fail: int = 0) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str | bytes]] = []
        self.fail = fail

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.fail:
            self.fail -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        return trace_service_pb2.ExportTraceServiceResponse()

    def names(self) -> list[str]:
        return [
            s.name
            for r in self.requests
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]


@pytest.fixture
def receiver() -> Iterator[tuple[_Receiver, int]]:
    rx = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(rx, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield rx, port
    server.stop(0)


def test_batcher_exports_in_batches_and_flushes_at_shutdown(
    receiver: tuple[_Receiver, int],
) -> None:
    rx, port = receiver
    batcher = OtlpBatcher(f"http://127.0.0.1:{port}", interval_s=30, batch=4)
    spans = sample_spans()
    for s in spans:
        batcher.on_end(s)
    deadline = time.monotonic() + 10
    while len(rx.names()) < 8 and time.monotonic() < deadline:  # two full batches of 4
        time.sleep(0.01)
    assert len(rx.requests) == 2
    batcher.on_end(spans[0])
    batcher.shutdown()  # the partial batch goes out before the thread stops
    assert len(rx.names()) == 9 and batcher.exported == 9 and batcher.dropped == 0


def test_batcher_retries_an_unavailable_collector(receiver: tuple[_Receiver, int]) -> None:
    rx, port = receiver
    rx.fail = 1
    batcher = OtlpBatcher(f"http://127.0.0.1:{port}", interval_s=30)
    span = sample_spans()[0]
    batcher.on_end(span)
    batcher.force_flush()
    batcher.shutdown()
    assert rx.names() == [span.name]
    assert batcher.exported == 1


def test_batcher_drops_the_oldest_when_full_and_counts_them() -> None:
    batcher = OtlpBatcher("http://127.0.0.1:1", interval_s=30, batch=100, max_queue=3, retries=0)
    for s in sample_spans()[:5]:
        batcher.on_end(s)
    assert batcher.dropped == 2
    batcher.shutdown()  # the collector is unreachable: the 3 queued spans are dropped too
    assert batcher.dropped == 5 and batcher.exported == 0


def test_a_batch_too_big_for_one_request_is_sent_in_halves(
    receiver: tuple[_Receiver, int],
) -> None:
    """Spans carrying documents (content recording) can make a batch larger than collectors
    accept (4 MiB by default): it goes in several requests, each under the limit."""
    rx, port = receiver
    batcher = OtlpBatcher(f"http://127.0.0.1:{port}", interval_s=30, max_bytes=10_000)
    tp = LeanTracerProvider(Resource.create({"service.name": "a"}))
    tp.add_sink(batcher)
    tracer = tp.get_tracer("longread")
    for i in range(8):
        tracer.start_span(f"chat {i}", attributes={"longread.prompt": "x" * 3000}).end()
    tracer.start_span("huge", attributes={"longread.prompt": "y" * 20_000}).end()
    batcher.shutdown()
    assert sorted(rx.names()) == sorted([f"chat {i}" for i in range(8)] + ["huge"])
    for r in rx.requests:  # each under the limit, unless a single span is over it alone
        spans = [s for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert r.ByteSize() <= 10_000 or len(spans) == 1
    assert len(rx.requests) >= 4  # three 3 KB spans to a request at most, then "huge"
    assert batcher.exported == 9 and batcher.dropped == 0


def test_batcher_settings_come_from_the_sdk_variables(receiver: tuple[_Receiver, int]) -> None:
    _, port = receiver
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3",  # seconds, as the SDK's exporter reads it
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
        "OTEL_BSP_MAX_QUEUE_SIZE": "128",
    }
    batcher = OtlpBatcher(f"http://127.0.0.1:{port}", env=env)
    assert (batcher._interval, batcher._timeout, batcher._batch, batcher._max_queue) == (
        0.25,
        3.0,
        64,
        128,
    )
    batcher.shutdown()
    defaults = OtlpBatcher(f"http://127.0.0.1:{port}", env={})
    assert (defaults._interval, defaults._batch, defaults._max_queue) == (5.0, 2048, 8192)
    defaults.shutdown()
    small_queue = OtlpBatcher(f"http://127.0.0.1:{port}", env={"OTEL_BSP_MAX_QUEUE_SIZE": "10"})
    assert small_queue._batch == 10
    small_queue.shutdown()
    for bad, message in (
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "lots"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "-1"}, "OTEL_BSP_SCHEDULE_DELAY"),
    ):
        with pytest.raises(ValueError, match=message):
            OtlpBatcher(f"http://127.0.0.1:{port}", env=bad)


def test_batcher_exports_what_was_queued_without_chasing_new_spans(
    receiver: tuple[_Receiver, int],
) -> None:
    """Spans that end while a batch is being sent wait for the next wake: chasing them sent
    a trickle of tiny batches under load, an export call each."""
    rx, port = receiver
    batcher = OtlpBatcher(f"http://127.0.0.1:{port}", interval_s=30, batch=4)
    spans = sample_spans()
    sent: list[int] = []
    send = batcher._send

    def send_while_spans_end(payload: bytes, count: int) -> None:
        sent.append(count)
        batcher._queue.append(flatten(spans[0]))  # a span ends meanwhile
        send(payload, count)

    batcher._send = send_while_spans_end  # type: ignore[method-assign]
    with batcher._lock:  # keep the thread out until the queue is filled
        for s in spans[:6]:
            batcher._queue.append(flatten(s))
    batcher._drain()
    assert sent == [4, 2]  # one full batch and the remainder of what was queued
    assert len(batcher._queue) == 2
    batcher._send = send  # type: ignore[method-assign]
    batcher.shutdown()
    assert batcher.exported == 8 and len(rx.names()) == 8


def test_batcher_sends_the_otlp_headers_of_the_environment(
    receiver: tuple[_Receiver, int],
) -> None:
    """``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``, as the SDK's exporters read it (values
    URL-encoded): how a collector behind an auth proxy gets its token."""
    rx, port = receiver
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20s3cret,x-team=search",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "authorization=Bearer%20traces-only",
    }
    batcher = OtlpBatcher(f"http://127.0.0.1:{port}", interval_s=30, env=env)
    batcher.on_end(sample_spans()[0])
    batcher.shutdown()
    assert len(rx.metadata) == 1
    assert rx.metadata[0]["authorization"] == "Bearer traces-only"  # the traces one wins
    assert "x-team" not in rx.metadata[0]
    batcher = OtlpBatcher(
        f"http://127.0.0.1:{port}", interval_s=30, env={k: env[k] for k in list(env)[:1]}
    )
    batcher.on_end(sample_spans()[0])
    batcher.shutdown()
    assert rx.metadata[1]["authorization"] == "Bearer s3cret"
    assert rx.metadata[1]["x-team"] == "search"


def test_batcher_exports_over_mutual_tls_with_the_files_of_the_environment(
    tmp_path: Path,
) -> None:
    certs = make_certs(tmp_path)
    rx = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(rx, server)  # type: ignore[no-untyped-call]
    creds = grpc.ssl_server_credentials(
        [(certs["server.key"].read_bytes(), certs["server.pem"].read_bytes())],
        root_certificates=certs["ca.pem"].read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        endpoint = f"https://localhost:{port}"
        trusted = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(certs["ca.pem"])}
        mutual = {
            **trusted,
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(certs["client.key"]),
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(certs["client.pem"]),
        }
        batcher = OtlpBatcher(endpoint, interval_s=30, retries=0, timeout_s=5, env=mutual)
        batcher.on_end(sample_spans()[0])
        batcher.shutdown()
        assert batcher.exported == 1 and len(rx.requests) == 1
        # Without a client certificate the receiver refuses the connection: dropped, counted.
        batcher = OtlpBatcher(endpoint, interval_s=30, retries=0, timeout_s=5, env=trusted)
        batcher.on_end(sample_spans()[0])
        batcher.shutdown()
        assert batcher.exported == 0 and batcher.dropped == 1 and len(rx.requests) == 1
    finally:
        server.stop(0)


def test_batcher_names_an_unreadable_tls_file_or_half_a_client_identity(
    tmp_path: Path,
) -> None:
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_CERTIFICATE"):
        OtlpBatcher("https://localhost:4317", env=env)
    key = tmp_path / "client.key"
    key.write_text("not used")
    env = {"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(key)}
    with pytest.raises(ValueError, match="set both or neither"):
        OtlpBatcher("https://localhost:4317", env=env)


def test_settings_are_each_signals_own_variables_first(tmp_path: Path) -> None:
    """One resolution for both signals: the signal's own variable (unless empty), else the
    general one; TLS from the endpoint's scheme, files read only for https://."""
    ca, other = tmp_path / "ca.pem", tmp_path / "metrics-ca.pem"
    ca.write_bytes(b"roots")
    other.write_bytes(b"metrics roots")
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20all,X-Team=search",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "authorization=metrics",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca),
        "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": str(other),
        "OTEL_EXPORTER_OTLP_TIMEOUT": "4",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2.5",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    }
    traces = OtlpSettings.resolve("https://collector:4317", "TRACES", env)
    metrics = OtlpSettings.resolve("https://collector:4317", "METRICS", env)
    assert (traces.target, traces.secure, metrics.target, metrics.secure) == (
        "collector:4317",
        True,
        "collector:4317",
        True,
    )
    assert traces.headers == (("authorization", "Bearer all"), ("x-team", "search"))
    assert metrics.headers == (("authorization", "metrics"),)
    assert (traces.root_certificates, metrics.root_certificates) == (b"roots", b"metrics roots")
    assert (traces.timeout_s, metrics.timeout_s) == (4.0, 2.5)
    assert traces.compression == metrics.compression == "gzip"
    plain = OtlpSettings.resolve("http://collector:4317", "METRICS", env)
    assert (plain.target, plain.secure, plain.root_certificates) == ("collector:4317", False, None)
    assert OtlpSettings.resolve("grpc://collector:4317", "TRACES", {}).target == "collector:4317"
    assert OtlpSettings.resolve("collector:4317", "TRACES", {}).target == "collector:4317"
    defaults = OtlpSettings.resolve("http://collector:4317", "METRICS", {})
    assert (defaults.headers, defaults.timeout_s, defaults.compression) == ((), 10.0, "")
    for bad, message in (
        ({"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
        ({"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": "/nonexistent/ca.pem"}, "METRICS_CERTIFICATE"),
    ):
        with pytest.raises(ValueError, match=message):
            OtlpSettings.resolve("https://collector:4317", "METRICS", bad)


class _MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.metadata: list[dict[str, str | bytes]] = []

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.names += [
            m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        ]
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        return metrics_service_pb2.ExportMetricsServiceResponse()


def test_metrics_are_sent_with_the_same_headers_and_mutual_tls_as_spans(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    rx = _MetricsReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(rx, server)  # type: ignore[no-untyped-call]
    creds = grpc.ssl_server_credentials(
        [(certs["server.key"].read_bytes(), certs["server.pem"].read_bytes())],
        root_certificates=certs["ca.pem"].read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    env = {
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(certs["ca.pem"]),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(certs["client.key"]),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(certs["client.pem"]),
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret",
    }
    try:
        reader = PeriodicExportingMetricReader(
            metric_exporter(OtlpSettings.resolve(f"https://localhost:{port}", "METRICS", env)),
            export_interval_millis=3_600_000,
        )
        provider = MeterProvider(metric_readers=[reader])
        provider.get_meter("test").create_counter("longread.test").add(1)
        provider.shutdown()  # collects and exports once more
    finally:
        server.stop(0)
    assert "longread.test" in rx.names
    assert rx.metadata[0]["authorization"] == "Bearer s3cret"


def test_a_wrong_tls_setting_stops_the_gateway_for_metrics_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")
    cfg = TelemetryConfig(metrics=True, otlp_endpoint="https://localhost:4317")
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read"):
        setup(cfg)


def test_endpoints_and_protocols_resolve_as_the_sdk_exporters_read_them() -> None:
    """The general endpoint gets the signal's path over HTTP; a signal's own endpoint is
    used as it is; the protocol is each signal's own variable first; gRPC's TLS follows
    the scheme, then ``INSECURE``."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "https://logs.example:443/custom/path",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "metrics:4317",
    }
    traces = OtlpSettings.resolve("", "TRACES", env)
    assert (traces.protocol, traces.endpoint, traces.secure) == (
        "http/protobuf",
        "http://collector:4318/v1/traces",
        False,
    )
    logs = OtlpSettings.resolve("", "LOGS", env)
    assert (logs.endpoint, logs.secure) == ("https://logs.example:443/custom/path", True)
    metrics = OtlpSettings.resolve("", "METRICS", env)
    # From a variable, a target without a scheme is TLS (the SDK's rule)...
    assert (metrics.protocol, metrics.target, metrics.secure) == ("grpc", "metrics:4317", True)
    plain = OtlpSettings.resolve("", "METRICS", {**env, "OTEL_EXPORTER_OTLP_INSECURE": "true"})
    assert not plain.secure
    # ... and from the configured endpoint plaintext, as documented for it.
    assert not OtlpSettings.resolve("collector:4317", "TRACES", {}).secure
    assert OtlpSettings.resolve("", "TRACES", {}).endpoint == "http://localhost:4317"
    http = OtlpSettings.resolve("", "TRACES", {}, protocol="http/protobuf")
    assert http.endpoint == "http://localhost:4318/v1/traces"
    for bad, message in (
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"},  # not over gRPC
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318",
            },
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            OtlpSettings.resolve("", "TRACES", bad)


class _HttpReceiver(ThreadingHTTPServer):
    """POSTs as an OTLP/HTTP collector receives them: path, headers, the body inflated."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append((self.path, headers, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_spans_go_over_http_protobuf_gzipped_as_the_sdk_exporter_sends_them() -> None:
    rx = _HttpReceiver()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{rx.server_port}",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=search",
    }
    try:
        batcher = OtlpBatcher(interval_s=30, env=env, protocol="http/protobuf")
        spans = sample_spans()
        for span in spans:
            batcher.on_end(span)
        batcher.shutdown()
    finally:
        rx.shutdown()
    ((path, headers, body),) = rx.requests
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["content-encoding"] == "gzip" and headers["x-team"] == "search"
    received = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert received == encode_spans(spans)


@pytest.mark.parametrize(
    ("cfg", "missing", "extra"),
    [
        (
            TelemetryConfig(metrics=True, otlp_endpoint="http://localhost:4317"),
            "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
            "otlp",
        ),
        (
            TelemetryConfig(metrics=True, prometheus=True, prometheus_port=0),
            "opentelemetry.exporter.prometheus",
            "prometheus",
        ),
    ],
)
def test_a_feature_whose_extra_is_not_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, cfg: TelemetryConfig, missing: str, extra: str
) -> None:
    # A None entry in sys.modules makes `import` raise ImportError, as an absent package does.
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ConfigError, match=rf"needs the '{extra}' extra") as err:
        setup(cfg)
    assert err.value.hint == f"pip install 'longread[{extra}]'"
