"""The server as an operator sees it: health, reflection, graceful drain, TLS, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from longread.client import AsyncClient, Options
from longread_sandbox import Sandbox
from longread_server.app import Gateway, start

from tests.certs import make_certs, mutual_tls
from tests.conftest import gateway_config
from tests.waiting import until

DOC = "The bridge opened in 1932. It carries two rail tracks and a footpath."
Q = "When did the bridge open?"


async def test_health_and_reflection(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        # The stub stubs describe the sync API; on an aio channel the calls are awaitable.
        h: Any = health_pb2_grpc.HealthStub(ch)
        for service in ("", "longread.v1.AnalysisService"):
            r = await h.Check(health_pb2.HealthCheckRequest(service=service))
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        refl: Any = reflection_pb2_grpc.ServerReflectionStub(ch)  # type: ignore[arg-type]
        responses = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
        assert "longread.v1.AnalysisService" in names
        assert "grpc.health.v1.Health" in names


async def test_graceful_drain_finishes_in_flight_work(sandbox: Sandbox) -> None:
    gw = await start(gateway_config(sandbox))
    target = f"127.0.0.1:{gw.port}"
    async with httpx.AsyncClient(base_url=sandbox.base_url) as http:
        await http.post("/_sandbox/config", json={"latency_ms": 400})
        try:
            async with AsyncClient(target) as c:
                in_flight = asyncio.create_task(c.analyze(DOC, Q))
                # In flight means at the sandbox: a fixed sleep let a busy machine begin the
                # drain before the client had even connected.
                await until(lambda: sandbox.stats.active > 0)
                stopping = asyncio.create_task(gw.stop(5.0))
                r = await in_flight
                assert "1932" in r.text
                await stopping
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await c.analyze(DOC, Q, timeout=2)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await http.post("/_sandbox/config", json={"latency_ms": 0})


async def test_mutual_tls(sandbox: Sandbox, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    gw = await start(gateway_config(sandbox, tls=mutual_tls(certs)))
    try:
        target = f"localhost:{gw.port}"
        ca = certs["ca.pem"].read_bytes()
        async with AsyncClient(
            target,
            root_certificates=ca,
            cert_chain=certs["client.pem"].read_bytes(),
            private_key=certs["client.key"].read_bytes(),
        ) as c:
            assert "1932" in (await c.analyze(DOC, Q)).text
        async with AsyncClient(target, root_certificates=ca) as c:  # no client certificate
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await c.analyze(DOC, Q, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gw.stop(0.5)


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "longread.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LONGREAD_API_KEY": ""},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_estimate_and_analyze(gateway: Gateway, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    target = f"127.0.0.1:{gateway.port}"
    rc, out, err = await _cli("estimate", str(doc), "-q", Q, "--target", target, "--json")
    assert rc == 0, err
    assert int(json.loads(out)["plan"]["documentTokens"]) > 0
    rc, out, err = await _cli("analyze", str(doc), "-q", Q, "--target", target, "--progress")
    assert rc == 0, err
    assert "1932" in out and "usage:" in err
    rc, out, err = await _cli(
        "analyze", str(doc), "-q", Q, "--target", target, "--temperature", "7"
    )
    assert rc == 1 and "generation.temperature" in err


async def test_cli_health(gateway: Gateway) -> None:
    rc, out, _ = await _cli("health", "--target", f"127.0.0.1:{gateway.port}")
    assert rc == 0 and out.strip() == "SERVING"
    rc, _, err = await _cli("health", "--target", "127.0.0.1:1", "--timeout", "0.5")
    # One line naming the target tried, with a hint (no traceback).
    assert rc == 1 and "cannot reach a gateway at 127.0.0.1:1" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_options_cover_every_request_field() -> None:
    """Guards the client: a new request field must get a keyword option."""
    from longread.v1 import analysis_service_pb2 as svc

    covered = {
        "document",
        "instruction",
        "model",
        "generation",
        "chunking",
        "cache",
        "budget",
        "labels",
        "history",
    }
    fields = {f.name for f in svc.AnalyzeRequest.DESCRIPTOR.fields}
    assert fields == covered
    assert Options().strategy == "auto"
