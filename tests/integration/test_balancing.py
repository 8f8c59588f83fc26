"""Balancing: the Python client's default service config (retries of UNAVAILABLE while nothing
of the response has arrived, round_robin) and the gateway's maximum connection age (GOAWAY,
then the client reconnects).

The retry tests run a small AnalysisService on grpc.aio over loopback that fails the first
attempts as a replica that went away would; the connection-age test runs the real gateway
behind a TCP relay that counts the connections the client opens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from longread.client import AsyncClient, Client, Options
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread_sandbox import Sandbox, SandboxConfig
from longread_server.app import start

from tests.conftest import gateway_config

DOC = "The lamp was converted to electricity in 1926."
QUESTION = "When was the lamp converted?"


class Flaky(svc_grpc.AnalysisServiceServicer):
    """Fails the first ``failures`` attempts of each RPC with UNAVAILABLE; a Stream fails
    before its first message, or after it with ``after_first``."""

    def __init__(self, failures: int = 1, *, after_first: bool = False) -> None:
        self.failures = failures
        self.after_first = after_first
        self.attempts: dict[str, int] = {"Estimate": 0, "Analyze": 0, "Stream": 0}

    async def _fail(self, method: str, context: Any) -> None:
        self.attempts[method] += 1
        if self.attempts[method] <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")

    async def Estimate(self, request: svc.EstimateRequest, context: Any) -> svc.EstimateResponse:
        await self._fail("Estimate", context)
        return svc.EstimateResponse()

    async def Analyze(self, request: svc.AnalyzeRequest, context: Any) -> svc.AnalyzeResponse:
        await self._fail("Analyze", context)
        return svc.AnalyzeResponse(text="1926")

    async def Stream(self, request: svc.StreamRequest, context: Any) -> AsyncIterator[Any]:
        if self.after_first:
            self.attempts["Stream"] += 1
            yield svc.StreamResponse()
            if self.attempts["Stream"] <= self.failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
            return
        await self._fail("Stream", context)
        yield svc.StreamResponse()


@contextlib.asynccontextmanager
async def serving(servicer: Flaky) -> AsyncIterator[str]:
    server = grpc.aio.server()
    svc_grpc.add_AnalysisServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_estimate_and_analyze_are_retried_on_unavailable() -> None:
    flaky = Flaky(failures=2)
    async with serving(flaky) as target, AsyncClient(target, timeout=10) as client:
        await client.estimate(DOC, QUESTION)
        assert (await client.analyze(DOC, QUESTION)).text == "1926"
    assert flaky.attempts["Estimate"] == flaky.attempts["Analyze"] == 3  # two failed, one OK


async def test_a_long_document_is_retried_too() -> None:
    """Above gRPC's default retry buffer (256 KiB) a call would be committed at once."""
    flaky = Flaky()
    async with serving(flaky) as target, AsyncClient(target, timeout=10) as client:
        await client.estimate(DOC * 40_000, QUESTION)  # about 1.8 MB
    assert flaky.attempts["Estimate"] == 2


async def test_the_sync_client_retries_too() -> None:
    flaky = Flaky()
    async with serving(flaky) as target:

        def call() -> None:
            with Client(target, timeout=10) as client:
                client.estimate(DOC, QUESTION)

        await asyncio.to_thread(call)
    assert flaky.attempts["Estimate"] == 2


async def test_a_stream_is_retried_before_its_first_message_only() -> None:
    before = Flaky()
    async with serving(before) as target, AsyncClient(target, timeout=10) as client:
        assert len([m async for m in client.stream(DOC, QUESTION)]) == 1
    assert before.attempts["Stream"] == 2

    after = Flaky(after_first=True)
    async with serving(after) as target, AsyncClient(target, timeout=10) as client:
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for m in client.stream(DOC, QUESTION):
                got.append(m)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(got) == 1 and after.attempts["Stream"] == 1  # committed: never retried


async def test_the_service_config_can_be_replaced_or_dropped() -> None:
    flaky = Flaky()
    async with serving(flaky) as target, AsyncClient(target, service_config=None) as client:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.estimate(DOC, QUESTION)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and flaky.attempts["Estimate"] == 1

    five = Flaky(failures=4)
    config = {
        "methodConfig": [
            {
                "name": [{"service": "longread.v1.AnalysisService", "method": "Estimate"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.05s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    async with serving(five) as target, AsyncClient(target, service_config=config) as client:
        await client.estimate(DOC, QUESTION)
    assert five.attempts["Estimate"] == 5


class Relay:
    """A TCP relay to ``port`` that counts the connections made through it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0
        self.closed = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.closed += 1

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_connections_are_closed_after_max_connection_age(sandbox: Sandbox) -> None:
    """server.max_connection_age_s: the gateway sends GOAWAY after the age; the client opens
    a new connection (re-resolving the name) and no call fails on the way."""
    cfg = gateway_config(sandbox)
    cfg.server.max_connection_age_s = 0.5
    cfg.server.max_connection_age_grace_s = 5.0
    gw = await start(cfg)
    relay = Relay(gw.port)
    port = await relay.start()
    calls = 0
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
            # As long as it takes (bounded by the harness): calls go on until the gateway has
            # closed the first connection and the client has opened another.
            async with asyncio.timeout(60):
                while relay.accepted < 2 or relay.closed < 1:
                    await client.estimate(DOC, QUESTION)
                    calls += 1
                    await asyncio.sleep(0.05)
            await client.estimate(DOC, QUESTION)  # on the new connection
    finally:
        await relay.stop()
        await gw.stop(0.2)
    assert relay.accepted >= 2 and relay.closed >= 1 and calls >= 1


async def test_connections_stay_open_without_an_age(sandbox: Sandbox) -> None:
    """max_connection_age_s = 0: the one connection carries every call."""
    cfg = gateway_config(sandbox)
    cfg.server.max_connection_age_s = 0
    gw = await start(cfg)
    relay = Relay(gw.port)
    port = await relay.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
            for _ in range(20):
                await client.estimate(DOC, QUESTION)
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
        await gw.stop(0.2)
    assert relay.accepted == 1


async def test_upstream_failures_are_not_retried_by_the_client() -> None:
    """UNAVAILABLE about an upstream (every replica shares it, and the gateway has already
    retried) carries gRPC's pushback of -1: the client's channel does not retry it, so one
    Analyze is one upstream attempt. A DRAINING refusal carries none (see ``to_status``)."""
    sb = Sandbox(SandboxConfig(host="127.0.0.1", port=0))
    await sb.start()
    cfg = gateway_config(sb)
    cfg.resilience.retry.max_attempts = 1
    cfg.resilience.breaker.enabled = False
    gw = await start(cfg)
    try:
        sb.configure(fault_rate=1.0, fault_kind="503")
        async with AsyncClient(f"127.0.0.1:{gw.port}", timeout=10) as client:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.analyze(DOC, QUESTION, options=Options(cache="bypass"))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        trailers = [(k, v) for k, v in e.value.trailing_metadata() or ()]
        assert ("grpc-retry-pushback-ms", "-1") in trailers
        assert sb.stats.requests == 1
    finally:
        await gw.stop(0.2)
        await sb.stop()
