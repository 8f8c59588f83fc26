"""Redaction that cannot leak: a marker sent through every content field of a request, and the
upstream's key, never reach any exported byte, whatever the upstream answers.

The real server on loopback, the emulator over HTTP, every signal on: spans exported over
OTLP/gRPC to a receiver in the test that keeps the raw bytes of each export (and the metrics'
OTLP exports with them), the Prometheus endpoint's text, every log line as the JSON formatter
writes it, and what the caller gets back (the status message and its details, as sent). The
emulator is made to answer with each error a vendor sends: a 400 that quotes the prompt, the
vendor's 401 that quotes the gateway's key (masked), a proxy's HTML 502 page that quotes the
prompt, an error event mid-stream that quotes it, a 429. With ``telemetry.record_content`` on,
the marker must then show on spans (so the search can find it), and the key still never.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from longread.client import error_details
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox, SandboxConfig
from longread_server.app import Gateway, start
from longread_server.config import RetryConfig, TelemetryConfig, TenantConfig
from longread_server.telemetry import JsonFormatter

from tests.conftest import gateway_config

# Letters, digits and dashes only: no encoding on the way (JSON, protobuf, Prometheus text,
# HTML escaping) can change how it is spelled, so a plain search finds every copy.
MARKER = "QUOKKA-7Y3M-CONTENT"
# Label values are the caller's metadata, which the gateway may record (as it records the
# vendor and model names, which must name a served model for a call to reach the upstream).
LABEL_VALUE = "label-value-NOT-CONTENT"
UPSTREAM_KEY = "sk-redact-upstream-9QxZ7wVkJ3pL"
TENANT_KEY = "tenant-key-redact-M4rk"
OPENAI_MODEL = ("openai", "gpt-4.1-mini")
ANTHROPIC_MODEL = ("anthropic", "claude-haiku-4-5")


def needles() -> list[bytes]:
    """What must never be exported: the marker, and the keys with every suffix of 4 or more
    characters (what a masked key shows)."""
    out = [MARKER.encode()]
    for key in (UPSTREAM_KEY, TENANT_KEY):
        out.extend(key[i:].encode() for i in range(len(key) - 3))
    return out


def key_needles() -> list[bytes]:
    return [n for n in needles() if n != MARKER.encode()]


class Receiver:
    """An OTLP/gRPC receiver that keeps the raw bytes of every export (traces and metrics)."""

    def __init__(self) -> None:
        self.exports: list[bytes] = []
        self.traces = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handlers = []
        for service, counted in (
            ("opentelemetry.proto.collector.trace.v1.TraceService", True),
            ("opentelemetry.proto.collector.metrics.v1.MetricsService", False),
        ):
            # No deserializer: the request arrives as the bytes the gateway sent. An empty
            # Export*ServiceResponse is zero bytes.
            method: Any = grpc.unary_unary_rpc_method_handler(self._keep(counted))
            handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
        self._server.add_generic_rpc_handlers(handlers)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _keep(self, trace: bool) -> Any:
        def export(request: bytes, context: Any) -> bytes:
            self.exports.append(request)
            self.traces += trace
            return b""

        return export

    def stop(self) -> None:
        self._server.stop(0)


class LogLines(logging.Handler):
    """Every log record of the process, as the gateway's JSON formatter writes it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self._formatter.format(record))


@contextmanager
def captured_logs() -> Iterator[LogLines]:
    handler = LogLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the gateway's default level (telemetry.log_level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    """The module's own emulator: it checks the gateway's key, and the 401 case changes it."""
    sb = Sandbox(SandboxConfig(host="127.0.0.1", port=0, api_key=UPSTREAM_KEY, retry_after_ms=20))
    await sb.start()
    yield sb
    await sb.stop()


async def gateway(sandbox: Sandbox, receiver: Receiver, *, record_content: bool) -> Gateway:
    cfg = gateway_config(sandbox, tenants=[TenantConfig(name="acme", api_keys=[TENANT_KEY])])
    for upstream in cfg.upstreams:
        upstream.api_key = UPSTREAM_KEY
    cfg.resilience.retry = RetryConfig(max_attempts=2, base_s=0.01, cap_s=0.05)
    cfg.telemetry = TelemetryConfig(
        traces=True,
        metrics=True,
        otlp_endpoint=f"http://127.0.0.1:{receiver.port}",
        metrics_interval_ms=200,
        prometheus=True,
        prometheus_port=0,
        client_spans=True,  # the httpx spans of each upstream request too
        record_content=record_content,
    )
    return await start(cfg)


def request(kind: type[Any], fault: str | None, model: tuple[str, str]) -> Any:
    """A request with the marker in every field that is content (document text and id,
    media type, instruction, system prompt, stop sequences, history), and labels."""
    unique = time.monotonic_ns()  # no answer from the cache, no single-flight
    aim = f" [[sandbox-fault:{fault}]]" if fault else ""
    req = kind(
        document=pb.Document(
            text=f"{MARKER} opens the ledger. The pier was rebuilt in 1911 ({unique}). "
            f"{MARKER} closes it.{aim}",
            id=f"doc-{MARKER}",
            media_type=f"text/plain; note={MARKER}",
        ),
        instruction=f"{MARKER}: when was the pier rebuilt?",
        model=pb.ModelSelection(vendor=model[0], model=model[1]),
        generation=pb.GenerationOptions(
            system_prompt=f"{MARKER} is the system prompt.",
            stop=[f"{MARKER}-STOP"],
            max_output_tokens=64,
        ),
        history=[
            pb.Turn(role=pb.ROLE_USER, text=f"{MARKER} asked before."),
            pb.Turn(role=pb.ROLE_ASSISTANT, text=f"{MARKER} answered before."),
        ],
    )
    if kind is not svc.EstimateRequest:
        req.labels["team"] = LABEL_VALUE
    return req


@dataclass
class Outcome:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    message: str


@dataclass
class Run:
    """What one gateway exported and answered."""

    client: list[bytes] = field(default_factory=list)  # status messages and details, as sent
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    otlp: list[bytes] = field(default_factory=list)
    traces: int = 0
    prometheus: bytes = b""
    logs: list[str] = field(default_factory=list)

    def exported(self) -> list[tuple[str, bytes]]:
        out = [("otlp export", b) for b in self.otlp]
        out.append(("prometheus", self.prometheus))
        out.extend(("log line", line.encode()) for line in self.logs)
        out.extend(("client status", b) for b in self.client)
        return out


METADATA = (("authorization", f"Bearer {TENANT_KEY}"),)


async def call(run: Run, name: str, stub: Any, req: Any) -> None:
    """One RPC that is expected to fail: its status, kept as the bytes the caller got."""
    try:
        if isinstance(req, svc.StreamRequest):
            async for _ in stub.Stream(req, metadata=METADATA, timeout=30):
                pass
        elif isinstance(req, svc.EstimateRequest):
            await stub.Estimate(req, metadata=METADATA, timeout=30)
        else:
            await stub.Analyze(req, metadata=METADATA, timeout=30)
    except grpc.aio.AioRpcError as e:
        run.client.append((e.details() or "").encode())
        for key, value in e.trailing_metadata() or ():
            run.client.append(value if isinstance(value, bytes) else f"{key}: {value}".encode())
        d = error_details(e)
        run.outcomes[name] = Outcome(d.code, d.reason, dict(d.metadata), d.message)
        return
    raise AssertionError(f"{name}: the call succeeded")


async def drive(sandbox: Sandbox, *, record_content: bool) -> Run:
    """Every error path, through one gateway with every signal on; then what it exported."""
    run = Run()
    receiver = Receiver()
    sandbox.reset()
    try:
        with captured_logs() as logs:
            gw = await gateway(sandbox, receiver, record_content=record_content)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
                    stub: Any = svc_grpc.AnalysisServiceStub(channel)  # typed for sync
                    # A successful answer first: the caller gets the marker back, nothing else.
                    ok = await stub.Analyze(
                        request(svc.AnalyzeRequest, None, OPENAI_MODEL), metadata=METADATA
                    )
                    assert MARKER in ok.text
                    for model in (OPENAI_MODEL, ANTHROPIC_MODEL):
                        v = model[0]
                        await call(
                            run, f"{v} 400", stub, request(svc.AnalyzeRequest, "echo_400", model)
                        )
                        await call(
                            run, f"{v} 502", stub, request(svc.AnalyzeRequest, "html_502", model)
                        )
                        await call(
                            run,
                            f"{v} mid",
                            stub,
                            request(svc.StreamRequest, "midstream_echo", model),
                        )
                        await call(run, f"{v} 429", stub, request(svc.AnalyzeRequest, "429", model))
                    # The emulator now wants another key: the gateway's own is refused, and
                    # OpenAI's 401 quotes it, masked (its length and its last four).
                    sandbox.configure(api_key="sk-another-key-entirely")
                    try:
                        await call(
                            run, "openai 401", stub, request(svc.AnalyzeRequest, None, OPENAI_MODEL)
                        )
                        count = request(svc.EstimateRequest, None, ANTHROPIC_MODEL)
                        count.exact_token_count = True  # the count_tokens endpoint's 401
                        await call(run, "anthropic 401", stub, count)
                    finally:
                        sandbox.configure(api_key=UPSTREAM_KEY)
                async with httpx.AsyncClient() as http:
                    scrape = await http.get(
                        f"http://127.0.0.1:{gw.telemetry.prometheus_port}/metrics"
                    )
                run.prometheus = scrape.content
            finally:
                await gw.stop(0.5)  # flushes the span batcher and the metric reader
        run.logs = logs.lines
        run.otlp = list(receiver.exports)
        run.traces = receiver.traces
    finally:
        receiver.stop()
    return run


def check_paths(sandbox: Sandbox, run: Run) -> None:
    """Each error path was taken (else finding nothing would prove nothing), and what is not
    content survives: the status, the vendor's error type or code, the request id."""
    faults = sandbox.stats.by_fault
    for kind in ("echo_400", "html_502", "midstream_echo", "429"):
        assert faults[kind] >= 2, (kind, dict(faults))
    assert sandbox.stats.by_status[401] >= 2
    o = run.outcomes
    for v in ("openai", "anthropic"):
        bad = o[f"{v} 400"]
        assert (bad.code, bad.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_REJECTED")
        assert bad.metadata["upstream_status"] == "400"
        assert bad.metadata["upstream_error_code"] in ("invalid_prompt", "invalid_request_error")
        assert bad.metadata["upstream_request_id"]
        page = o[f"{v} 502"]
        assert page.code == grpc.StatusCode.UNAVAILABLE
        assert page.metadata["upstream_status"] == "502"
        assert "HTTP 502 Bad Gateway" in page.message
        assert o[f"{v} mid"].code == grpc.StatusCode.UNAVAILABLE
        limited = o[f"{v} 429"]
        assert limited.code == grpc.StatusCode.UNAVAILABLE and "HTTP 429" in limited.message
    for v, model in (("openai", OPENAI_MODEL), ("anthropic", ANTHROPIC_MODEL)):
        refused = o[f"{v} 401"]
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPSTREAM_AUTH_FAILED",
        )
        assert refused.metadata["upstream"] == model[0]
        assert refused.metadata["upstream_status"] == "401"
        assert f"upstream {model[0]!r} refused the gateway's credentials" in refused.message
    spans = b"".join(run.otlp)
    assert run.traces > 0 and b"http.response.status_code" in spans
    assert b"longread.upstream.error_code" in spans and b"invalid_prompt" in spans
    assert b"longread.upstream.request_id" in spans
    assert len(run.otlp) > run.traces  # metric exports came too
    assert b"longread_rpc_duration" in run.prometheus
    access = [line for line in run.logs if '"logger": "longread.access"' in line]
    assert len(access) == len(run.outcomes) + 1


def leaks(run: Run, what: list[bytes]) -> list[str]:
    found = []
    for where, data in run.exported():
        for needle in what:
            at = data.find(needle)
            if at >= 0:
                excerpt = data[max(0, at - 80) : at + len(needle) + 40]
                found.append(f"{where}: {needle!r} in ...{excerpt!r}...")
                break
    return found


async def test_no_content_or_key_fragment_is_exported_on_any_error_path(
    sandbox: Sandbox,
) -> None:
    run = await drive(sandbox, record_content=False)
    check_paths(sandbox, run)
    assert not leaks(run, needles()), "\n".join(leaks(run, needles()))


async def test_recorded_content_shows_on_spans_but_never_a_key(sandbox: Sandbox) -> None:
    run = await drive(sandbox, record_content=True)
    check_paths(sandbox, run)
    spans = b"".join(run.otlp)
    # Content is recorded: the prompt, and the upstream's own words that quote it.
    assert MARKER.encode() in spans
    assert b"longread.upstream.error_detail" in spans and b"Invalid prompt: '" in spans
    assert b"<title>502 Bad Gateway</title>" in spans
    assert b"The model failed on: '" + MARKER.encode() in spans  # the mid-stream error event
    # The caller is shown the vendor's words too, now that content may be shown...
    assert MARKER in run.outcomes["openai 400"].message
    # ...but a refused key's answer is dropped whatever the setting.
    assert not leaks(run, key_needles()), "\n".join(leaks(run, key_needles()))
    assert "Incorrect API key" not in run.outcomes["openai 401"].message


def test_the_needles_would_find_a_masked_key() -> None:
    """OpenAI's mask (the emulator's: the first three, stars, the last four) is caught."""
    masked = (UPSTREAM_KEY[:3] + "*" * (len(UPSTREAM_KEY) - 7) + UPSTREAM_KEY[-4:]).encode()
    assert any(n in masked for n in key_needles())
    assert not any(n in b"sk-**********" for n in key_needles())
