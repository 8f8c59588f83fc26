"""The HTTP face (``[http] listen``): the AnalysisService over Connect (JSON and binary), as
curl would speak it (httpx, raw) and through the official Connect Python client, over gRPC-Web,
and the README's curl examples; its errors compared with what gRPC answers for the same input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb
from longread.v1.analysis_service_connect import AnalysisServiceClient
from longread_sandbox import Sandbox
from longread_server.app import Gateway, start
from longread_server.config import ConfigError, TenantConfig
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.certs import make_certs, mutual_tls
from tests.conftest import TENANT_KEYS, gateway_config
from tests.unit.telemetry.support import FlushedMemory, setup_with_memory

DOC = "The harbour was dredged in 1998. Ferries now dock at the east quay. " * 3
Q = "When was the harbour dredged?"
KEY = TENANT_KEYS["acme"]
AUTH = {"authorization": f"Bearer {KEY}"}
METERED_KEY = "k-connect-metered"
SERVICE = "/longread.v1.AnalysisService/"
README = Path(__file__).resolve().parents[2] / "README.md"

# A status as both faces can be compared on: code (Connect's spelling), message, and the
# google.rpc details as (type name, bytes).
Status = tuple[str, str, list[tuple[str, bytes]]]


@pytest.fixture(scope="module")
async def web(sandbox: Sandbox) -> AsyncIterator[Gateway]:
    tenants = [TenantConfig(name=n, api_keys=[k]) for n, k in TENANT_KEYS.items()]
    tenants.append(TenantConfig(name="metered", api_keys=[METERED_KEY], requests_per_minute=1))
    cfg = gateway_config(sandbox, tenants=tenants)
    cfg.http.listen = "127.0.0.1:0"
    gw = await start(cfg)
    yield gw
    await gw.stop(0.5)


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{gw.http_port}"


def request_json(**extra: Any) -> dict[str, Any]:
    return {"document": {"text": DOC}, "instruction": Q, **extra}


def envelope(body: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(body)) + body


def envelopes(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        flags, n = struct.unpack(">BI", data[:5])
        out.append((flags, data[5 : 5 + n]))
        data = data[5 + n :]
    return out


def connect_status(body: dict[str, Any]) -> Status:
    details = [
        (d["type"], base64.b64decode(d["value"] + "=" * (-len(d["value"]) % 4)))
        for d in body.get("details", [])
    ]
    return body["code"], body.get("message", ""), details


def grpc_status(e: grpc.aio.AioRpcError) -> Status:
    trailers = dict(e.trailing_metadata() or ())
    proto = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    code = str(code_pb2.Code.Name(proto.code)).lower()
    details = [(d.type_url.rsplit("/", 1)[-1], d.value) for d in proto.details]
    return code, proto.message, details


def client_status(e: ConnectError) -> Status:
    return e.code.value, e.message, [(d.type_name, d.message_bytes) for d in e.details]


async def grpc_call(gw: Gateway, method: str, req: Any, key: str = KEY, timeout: float = 30) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        stub = svc_grpc.AnalysisServiceStub(ch)
        md = (("authorization", f"Bearer {key}"),)
        if method == "Stream":
            return [m async for m in stub.Stream(req, metadata=md, timeout=timeout)]
        return await getattr(stub, method)(req, metadata=md, timeout=timeout)


async def grpc_error(gw: Gateway, method: str, req: Any, **kw: Any) -> Status:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(gw, method, req, **kw)
    return grpc_status(info.value)


# ---- the raw protocol, as curl speaks it ----


async def test_unary_rpcs_in_json_and_binary(web: Gateway) -> None:
    async with httpx.AsyncClient(base_url=base(web), headers=AUTH, timeout=60) as http:
        r = await http.post(SERVICE + "Estimate", json=request_json())
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        est = json_format.Parse(r.content, svc.EstimateResponse())
        assert est.plan.document_tokens > 0 and est.candidates

        r = await http.post(SERVICE + "Analyze", json=request_json())
        assert r.status_code == 200, r.text
        by_json = json_format.Parse(r.content, svc.AnalyzeResponse())

        binary = svc.AnalyzeRequest(document=pb.Document(text=DOC), instruction=Q)
        r = await http.post(
            SERVICE + "Analyze",
            content=binary.SerializeToString(),
            headers={"content-type": "application/proto"},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/proto"
        by_proto = svc.AnalyzeResponse.FromString(r.content)
    by_grpc = await grpc_call(web, "Analyze", binary)
    assert by_json.text == by_proto.text == by_grpc.text != ""
    assert by_json.plan == by_proto.plan == by_grpc.plan


@pytest.mark.parametrize("codec", ["json", "proto"])
async def test_stream_in_connect_envelopes(web: Gateway, codec: str) -> None:
    req = svc.StreamRequest(document=pb.Document(text=DOC), instruction=Q)
    body = json_format.MessageToJson(req).encode() if codec == "json" else req.SerializeToString()
    async with httpx.AsyncClient(base_url=base(web), headers=AUTH, timeout=60) as http:
        r = await http.post(
            SERVICE + "Stream",
            content=envelope(body),
            headers={"content-type": f"application/connect+{codec}"},
        )
    assert r.status_code == 200 and r.headers["content-type"] == f"application/connect+{codec}"
    frames = envelopes(r.content)
    (*messages, (end_flags, end)) = frames
    assert end_flags == 2 and json.loads(end) == {}
    events = [
        json_format.Parse(m, svc.StreamResponse())
        if codec == "json"
        else svc.StreamResponse.FromString(m)
        for flags, m in messages
        if flags == 0
    ]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "result" and "delta" in kinds
    by_grpc = await grpc_call(web, "Stream", req)
    assert [e.WhichOneof("event") for e in by_grpc] == kinds
    assert by_grpc[-1].result.text == events[-1].result.text


async def test_grpc_web(web: Gateway) -> None:
    req = svc.EstimateRequest(document=pb.Document(text=DOC), instruction=Q)
    async with httpx.AsyncClient(base_url=base(web), headers=AUTH, timeout=60) as http:
        r = await http.post(
            SERVICE + "Estimate",
            content=envelope(req.SerializeToString()),
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
    assert r.status_code == 200
    (flags, msg), (tflags, trailers) = envelopes(r.content)
    assert flags == 0 and tflags == 0x80 and b"grpc-status: 0" in trailers.lower()
    assert svc.EstimateResponse.FromString(msg).plan.document_tokens > 0
    # And through the Connect client speaking gRPC-Web: a Stream, collected.
    async with AnalysisServiceClient(base(web), protocol=ProtocolType.GRPC_WEB) as c:
        sreq = svc.StreamRequest(document=pb.Document(text=DOC), instruction=Q)
        events = [e async for e in c.stream(sreq, headers=AUTH)]
        assert events[-1].HasField("result") and events[-1].result.text


# ---- the official Connect client ----


@pytest.mark.parametrize("json_codec", [False, True])
async def test_connect_python_client(web: Gateway, json_codec: bool) -> None:
    codec = google_protobuf_json_codec() if json_codec else google_protobuf_binary_codec()
    async with AnalysisServiceClient(base(web), timeout_ms=60_000, codec=codec) as c:
        est = await c.estimate(
            svc.EstimateRequest(document=pb.Document(text=DOC), instruction=Q), headers=AUTH
        )
        assert est.plan.document_tokens > 0
        res = await c.analyze(
            svc.AnalyzeRequest(document=pb.Document(text=DOC), instruction=Q), headers=AUTH
        )
        events = [
            e
            async for e in c.stream(
                svc.StreamRequest(document=pb.Document(text=DOC), instruction=Q), headers=AUTH
            )
        ]
        assert events[0].HasField("plan") and events[-1].result.text == res.text != ""
        with pytest.raises(ConnectError) as info:
            await c.analyze(svc.AnalyzeRequest(instruction=Q), headers=AUTH)
    assert info.value.code is Code.INVALID_ARGUMENT
    (bad,) = [d for d in info.value.details if d.type_name == "google.rpc.BadRequest"]
    fields = error_details_pb2.BadRequest.FromString(bad.message_bytes).field_violations
    assert [f.field for f in fields] == ["document.text"]


# ---- errors: the same status on both faces ----


@pytest.mark.parametrize("method", ["Estimate", "Analyze", "Stream"])
async def test_bad_input_is_invalid_argument_with_the_same_details(
    web: Gateway, method: str
) -> None:
    bad = {"document": {"text": ""}, "instruction": "", "generation": {"temperature": 9}}
    req = json_format.ParseDict(bad, getattr(svc, f"{method}Request")())
    expected = await grpc_error(web, method, req)
    assert expected[0] == "invalid_argument" and {t for t, _ in expected[2]} == {
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
    }
    async with httpx.AsyncClient(base_url=base(web), headers=AUTH, timeout=60) as http:
        if method == "Stream":
            r = await http.post(
                SERVICE + method,
                content=envelope(json.dumps(bad).encode()),
                headers={"content-type": "application/connect+json"},
            )
            assert r.status_code == 200  # a stream's error is its end message
            ((flags, end),) = envelopes(r.content)
            assert flags == 2
            got = connect_status(json.loads(end)["error"])
        else:
            r = await http.post(SERVICE + method, json=bad)
            assert r.status_code == 400
            got = connect_status(r.json())
    assert got == expected
    async with AnalysisServiceClient(base(web)) as c:
        with pytest.raises(ConnectError) as info:
            if method == "Stream":
                [e async for e in c.stream(req, headers=AUTH)]
            else:
                await getattr(c, method.lower())(req, headers=AUTH)
    assert client_status(info.value) == expected


async def test_malformed_body_is_invalid_argument_as_on_grpc(web: Gateway) -> None:
    async with httpx.AsyncClient(base_url=base(web), headers=AUTH, timeout=60) as http:
        r = await http.post(
            SERVICE + "Analyze", content=b"\xff\xff", headers={"content-type": "application/proto"}
        )
        assert r.status_code == 400
        code, message, details = connect_status(r.json())
        r = await http.post(
            SERVICE + "Analyze", content=b"{nope", headers={"content-type": "application/json"}
        )
        jcode, jmessage, _ = connect_status(r.json())
    assert code == jcode == "invalid_argument"
    assert "not a valid longread.v1.AnalyzeRequest" in message and "JSON" in jmessage
    info = error_details_pb2.ErrorInfo.FromString(details[0][1])
    assert info.reason == "MALFORMED_REQUEST"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{web.port}") as ch:
        analyze: Any = ch.unary_unary(SERVICE + "Analyze")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await analyze(b"\xff\xff", metadata=tuple(AUTH.items()))
    assert grpc_status(e.value) == (code, message, details)


@pytest.mark.parametrize("key", ["", "not-a-key"])
async def test_bad_key_is_unauthenticated(web: Gateway, key: str) -> None:
    req = svc.EstimateRequest(document=pb.Document(text=DOC), instruction=Q)
    expected = await grpc_error(web, "Estimate", req, key=key)
    assert expected[0] == "unauthenticated"
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=base(web), headers=headers, timeout=60) as http:
        r = await http.post(SERVICE + "Estimate", json=request_json())
    assert r.status_code == 401 and connect_status(r.json()) == expected


async def test_over_the_rate_limit_is_resource_exhausted_with_the_same_details(
    web: Gateway,
) -> None:
    req = svc.AnalyzeRequest(
        document=pb.Document(text=DOC),
        instruction=Q,
        cache=pb.CachePolicy(mode=pb.CACHE_MODE_BYPASS),
    )
    await grpc_call(web, "Analyze", req, key=METERED_KEY)  # the minute's one request
    expected = await grpc_error(web, "Analyze", req, key=METERED_KEY, timeout=1.5)
    async with httpx.AsyncClient(
        base_url=base(web),
        headers={"authorization": f"Bearer {METERED_KEY}", "connect-timeout-ms": "1500"},
        timeout=60,
    ) as http:
        r = await http.post(
            SERVICE + "Analyze",
            content=req.SerializeToString(),
            headers={"content-type": "application/proto"},
        )
    assert r.status_code == 429
    got = connect_status(r.json())
    assert got[0] == expected[0] == "resource_exhausted"
    types = [t for t, _ in got[2]]
    assert types == [t for t, _ in expected[2]]
    assert types == [
        "google.rpc.ErrorInfo",
        "google.rpc.RetryInfo",
        "google.rpc.QuotaFailure",
    ]
    # The same reason, owner and quota; the wait (in the message, RetryInfo and the quota's
    # description) is the bucket's at each moment.
    info, grpc_info = dict(got[2]), dict(expected[2])
    assert info["google.rpc.ErrorInfo"] == grpc_info["google.rpc.ErrorInfo"]
    subjects = [
        [v.subject for v in error_details_pb2.QuotaFailure.FromString(i).violations]
        for i in (info["google.rpc.QuotaFailure"], grpc_info["google.rpc.QuotaFailure"])
    ]
    assert subjects == [["tenant:metered/requests_per_minute"]] * 2


async def test_connect_timeout_is_the_deadline(web: Gateway, sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as sb:
        (await sb.post("/_sandbox/config", json={"latency_ms": 3000})).raise_for_status()
        try:
            async with httpx.AsyncClient(base_url=base(web), headers=AUTH, timeout=60) as http:
                r = await http.post(
                    SERVICE + "Analyze",
                    json=request_json(cache={"mode": "CACHE_MODE_BYPASS"}),
                    headers={"connect-timeout-ms": "500"},
                )
        finally:
            (await sb.post("/_sandbox/config", json={"latency_ms": 0})).raise_for_status()
    assert r.json()["code"] == "deadline_exceeded"


# ---- the README's examples ----


def readme_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## HTTP/JSON (Connect)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if "curl " in b]


async def test_readme_curl_examples(sandbox: Sandbox) -> None:
    examples = readme_examples()
    assert len(examples) == 3
    cfg = gateway_config(sandbox)
    cfg.http.listen = "127.0.0.1:0"
    gw = await start(cfg)
    try:
        outputs = []
        for example in examples:
            script = example.replace("http://127.0.0.1:8081", base(gw))
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            outputs.append(out)
    finally:
        await gw.stop(0.5)
    estimate, analyze, stream = outputs
    assert json.loads(estimate)["plan"]["documentTokens"]
    assert json.loads(analyze)["text"]
    frames = envelopes(stream)
    assert frames[-1] == (2, b"{}")
    kinds = [next(iter(json.loads(m))) for flags, m in frames[:-1]]
    assert kinds[0] == "plan" and "delta" in kinds and kinds[-1] == "result"


# ---- telemetry ----


async def test_spans_metrics_and_trace_context_as_on_grpc(sandbox: Sandbox) -> None:
    spans = FlushedMemory()
    metrics = InMemoryMetricReader()
    cfg = gateway_config(sandbox)
    cfg.http.listen = "127.0.0.1:0"
    gw = await start(
        cfg, telemetry=setup_with_memory(cfg.telemetry, spans, metric_readers=[metrics])
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with httpx.AsyncClient(base_url=base(gw), timeout=60) as http:
            r = await http.post(
                SERVICE + "Analyze",
                json=request_json(),
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            assert r.status_code == 200
            r = await http.post(SERVICE + "Estimate", json={"instruction": Q})
            assert r.status_code == 400
    finally:
        await gw.stop(0.5)
    server = {s.name: s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER}
    ok = server["longread.v1.AnalysisService/Analyze"]
    assert f"{ok.context.trace_id:032x}" == trace_id  # the caller's trace, continued
    assert dict(ok.attributes or {}) == {
        "rpc.system": "connect_rpc",
        "rpc.service": "longread.v1.AnalysisService",
        "rpc.method": "Analyze",
        "rpc.grpc.status_code": 0,
        "longread.tenant": "local",
    }
    bad = dict(server["longread.v1.AnalysisService/Estimate"].attributes or {})
    assert bad["rpc.connect_rpc.error_code"] == "invalid_argument"
    assert bad["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    data = metrics.get_metrics_data()
    points = [
        dict(p.attributes or {})
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "longread.rpc.duration"
        for p in m.data.data_points
    ]
    assert {"rpc.method": "Analyze", "rpc.grpc.status_code": "OK", "rpc.system": "connect_rpc"} in (
        points
    )


# ---- serving: TLS, the drain ----


async def test_mutual_tls_as_on_the_grpc_listener(sandbox: Sandbox, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    cfg = gateway_config(sandbox, tls=mutual_tls(certs))
    cfg.http.listen = "127.0.0.1:0"
    gw = await start(cfg)
    url = f"https://localhost:{gw.http_port}{SERVICE}Estimate"
    try:
        ctx = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        ctx.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
        async with httpx.AsyncClient(verify=ctx, timeout=30) as http:
            r = await http.post(url, json=request_json())
        assert r.status_code == 200 and r.json()["plan"]["documentTokens"]
        bare = ssl.create_default_context(cafile=str(certs["ca.pem"]))  # no client certificate
        async with httpx.AsyncClient(verify=bare, timeout=30) as http:
            with pytest.raises(httpx.HTTPError):
                (await http.post(url, json=request_json())).raise_for_status()
    finally:
        await gw.stop(0.5)


async def test_the_drain_refuses_and_cuts_connect_rpcs_as_grpc_ones(sandbox: Sandbox) -> None:
    cfg = gateway_config(sandbox)
    cfg.http.listen = "127.0.0.1:0"
    cfg.server.drain_delay_s = 0.0
    gw = await start(cfg)
    async with (
        httpx.AsyncClient(base_url=sandbox.base_url) as sb,
        httpx.AsyncClient(base_url=base(gw), timeout=30) as http,
    ):
        await sb.post("/_sandbox/config", json={"latency_ms": 3000})
        try:
            slow = asyncio.create_task(
                http.post(
                    SERVICE + "Analyze", json=request_json(cache={"mode": "CACHE_MODE_BYPASS"})
                )
            )
            await asyncio.sleep(0.3)  # the request is upstream
            stopping = asyncio.create_task(gw.stop(0.3))
            await asyncio.sleep(0.05)
            refused = await http.post(SERVICE + "Estimate", json=request_json())
            cut = await slow
            await stopping
        finally:
            await sb.post("/_sandbox/config", json={"latency_ms": 0})
    for r in (refused, cut):
        code, _, details = connect_status(r.json())
        assert (r.status_code, code) == (503, "unavailable")
        info = error_details_pb2.ErrorInfo.FromString(dict(details)["google.rpc.ErrorInfo"])
        assert info.reason == "DRAINING" and "google.rpc.RetryInfo" in dict(details)


async def test_an_http_address_in_use_is_a_config_error_naming_it(sandbox: Sandbox) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = gateway_config(sandbox)
        cfg.http.listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ConfigError) as info:
            await start(cfg)
    assert info.value.setting == "http.listen"
