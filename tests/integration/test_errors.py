"""Bad input, auth, budgets, upstream faults and deadlines: clear statuses with details."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from longread.client import AsyncClient, Options, build_request, error_details
from longread.v1 import analysis_service_pb2 as svc
from longread_sandbox import Sandbox
from longread_server.app import Gateway, start
from longread_server.config import LimitsConfig, TenantConfig

from tests.conftest import TENANT_KEYS, gateway_config

DOC = "The harbour was dredged in 1998. Ferries now dock at the east quay. " * 3
Q = "When was the harbour dredged?"


async def expect_error(coro: object, code: grpc.StatusCode) -> object:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return error_details(info.value)


@pytest.mark.parametrize(
    ("text", "question", "opts", "field", "reason"),
    [
        ("", Q, Options(), "document.text", "INVALID_FIELD"),
        ("   \n ", Q, Options(), "document.text", "INVALID_FIELD"),
        (DOC, "", Options(), "instruction", "INVALID_FIELD"),
        (DOC, Q, Options(vendor="nope"), "model.vendor", "UNKNOWN_MODEL"),
        (DOC, Q, Options(model="gpt-9"), "model.model", "UNKNOWN_MODEL"),
        (DOC, Q, Options(model="gpt-4o", vendor="anthropic"), "model.model", "UNKNOWN_MODEL"),
        (DOC, Q, Options(temperature=2.5), "generation.temperature", "INVALID_FIELD"),
        (DOC, Q, Options(temperature=-0.1), "generation.temperature", "INVALID_FIELD"),
        (DOC, Q, Options(top_p=0.0), "generation.top_p", "INVALID_FIELD"),
        (DOC, Q, Options(max_output_tokens=0), "generation.max_output_tokens", "INVALID_FIELD"),
        (DOC, Q, Options(max_output_tokens=-5), "generation.max_output_tokens", "INVALID_FIELD"),
        (DOC, Q, Options(max_chunk_tokens=-1), "chunking.max_chunk_tokens", "INVALID_FIELD"),
        (
            DOC,
            Q,
            Options(max_chunk_tokens=100, overlap_tokens=100),
            "chunking.overlap_tokens",
            "INVALID_FIELD",
        ),
        (DOC, Q, Options(stop=["a", "b", "c", "d", "e"]), "generation.stop", "INVALID_FIELD"),
        (DOC, Q, Options(stop=["x" * 1001]), "generation.stop[0]", "INVALID_FIELD"),
        # Anthropic's temperature ranges from 0 to 1 (OpenAI's to 2): refused, not forwarded.
        (
            DOC,
            Q,
            Options(model="claude-haiku-4-5", temperature=1.5),
            "generation.temperature",
            "INVALID_FIELD",
        ),
        (DOC, Q, Options(model="m" * 1_000_000), "model.model", "INVALID_FIELD"),
        (DOC, Q, Options(document_id="d" * 1_000_000), "document.id", "INVALID_FIELD"),
        (
            DOC,
            Q,
            Options(max_chunk_tokens=3, strategy="map_reduce"),
            "chunking.max_chunk_tokens",
            "INVALID_FIELD",
        ),
        (
            DOC,
            Q,
            Options(overlap_tokens=2**31 - 1, strategy="map_reduce"),
            "chunking.overlap_tokens",
            "INVALID_FIELD",
        ),
        (DOC, Q, Options(max_cost_usd=-1), "budget.max_cost_usd", "INVALID_FIELD"),
        (
            DOC,
            Q,
            Options(model="gpt-4o-mini", strategy="single_pass"),
            "chunking.strategy",
            "DOES_NOT_FIT",
        ),
    ],
)
async def test_invalid_argument_with_field_violations(
    client: AsyncClient, text: str, question: str, opts: Options, field: str, reason: str
) -> None:
    if reason == "DOES_NOT_FIT":
        text = DOC * 12_000  # ~200K tokens, more than gpt-4o-mini takes in one call
    for call in (client.estimate, client.analyze):
        if call == client.estimate and field == "chunking.strategy":
            continue
        d = await expect_error(call(text, question, options=opts), grpc.StatusCode.INVALID_ARGUMENT)
        assert field in [f for f, _ in d.field_violations], d  # type: ignore[attr-defined]
        assert d.reason == reason  # type: ignore[attr-defined]
        # However long the input it quotes, the status stays small (gRPC's trailers are
        # limited to 8 KiB by default; over it, the caller would see only "Stream removed").
        assert len(d.message) <= 1024  # type: ignore[attr-defined]


async def test_stream_rejects_bad_input_with_status_not_event(client: AsyncClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in client.stream("", Q):
            pytest.fail("no event expected")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("document.text", "must not be empty") in error_details(info.value).field_violations


async def test_every_violation_reported_at_once(client: AsyncClient) -> None:
    d = await expect_error(
        client.analyze("", "", options=Options(temperature=9, top_p=2)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fields = {f for f, _ in d.field_violations}  # type: ignore[attr-defined]
    assert fields == {"document.text", "instruction", "generation.temperature", "generation.top_p"}


@pytest.fixture(scope="module")
async def small_gateway(sandbox: Sandbox) -> AsyncIterator[Gateway]:
    limits = LimitsConfig(max_document_chars=2000, max_document_tokens=200)
    gw = await start(gateway_config(sandbox, limits=limits))
    yield gw
    await gw.stop(0.5)


async def test_document_over_limits(small_gateway: Gateway) -> None:
    async with AsyncClient(f"127.0.0.1:{small_gateway.port}") as c:
        d = await expect_error(c.analyze("x" * 2001, Q), grpc.StatusCode.INVALID_ARGUMENT)
        assert d.reason == "DOCUMENT_TOO_LARGE" and "2000" in d.message  # type: ignore[attr-defined]
        d = await expect_error(c.estimate("word " * 400, Q), grpc.StatusCode.INVALID_ARGUMENT)
        assert d.reason == "DOCUMENT_TOO_LARGE"  # type: ignore[attr-defined]
        assert d.metadata["limit"] == "200"  # type: ignore[attr-defined]


async def test_unauthenticated(auth_gateway: Gateway) -> None:
    target = f"127.0.0.1:{auth_gateway.port}"
    async with AsyncClient(target) as c:
        d = await expect_error(c.estimate(DOC, Q), grpc.StatusCode.UNAUTHENTICATED)
        assert d.reason == "UNAUTHENTICATED"  # type: ignore[attr-defined]
    async with AsyncClient(target, api_key="wrong") as c:
        await expect_error(c.analyze(DOC, Q), grpc.StatusCode.UNAUTHENTICATED)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in c.stream(DOC, Q):
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with AsyncClient(target, api_key=TENANT_KEYS["acme"]) as c:
        r = await c.analyze(DOC, Q)
        assert "1998" in r.text


async def test_budget_exceeded_fails_before_any_call(client: AsyncClient, sandbox: Sandbox) -> None:
    before = sandbox.stats.requests
    d = await expect_error(
        client.analyze(DOC, Q, options=Options(model="claude-opus-4-1", max_cost_usd=1e-6)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert d.reason == "BUDGET_EXCEEDED"  # type: ignore[attr-defined]
    assert sandbox.stats.requests == before
    est = await client.estimate(DOC, Q, options=Options(max_cost_usd=1e-6))
    assert not est.plan.within_budget


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("503", grpc.StatusCode.UNAVAILABLE),
        ("529", grpc.StatusCode.UNAVAILABLE),
        ("429", grpc.StatusCode.UNAVAILABLE),
        ("500", grpc.StatusCode.UNAVAILABLE),
        ("midstream_error", grpc.StatusCode.UNAVAILABLE),
        ("reset", grpc.StatusCode.UNAVAILABLE),
    ],
)
@pytest.mark.parametrize("model", ["gpt-4.1-mini", "claude-haiku-4-5"])
async def test_upstream_faults_map_to_retryable_status(
    client: AsyncClient, fault: str, code: grpc.StatusCode, model: str
) -> None:
    doc = f"{DOC} [[sandbox-fault:{fault}]]"
    d = await expect_error(client.analyze(doc, Q, options=Options(model=model)), code)
    assert d.reason == "UPSTREAM_UNAVAILABLE"  # type: ignore[attr-defined]
    assert d.retry_after_s is not None and d.retry_after_s > 0  # type: ignore[attr-defined]
    vendor = {"gpt-4.1-mini": "openai", "claude-haiku-4-5": "anthropic"}[model]
    assert d.metadata["vendor"] == vendor  # type: ignore[attr-defined]


async def test_deadline_exceeded_while_upstream_is_slow(
    client: AsyncClient, sandbox: Sandbox
) -> None:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as http:
        (await http.post("/_sandbox/config", json={"latency_ms": 3000})).raise_for_status()
        try:
            d = await expect_error(
                client.analyze(DOC, Q, timeout=0.5), grpc.StatusCode.DEADLINE_EXCEEDED
            )
            del d
        finally:
            (await http.post("/_sandbox/config", json={"latency_ms": 0})).raise_for_status()


async def test_request_built_by_hand_works(client: AsyncClient) -> None:
    req = build_request(svc.AnalyzeRequest, DOC, Q, Options(model="gpt-4.1-nano"))
    r = await client.analyze(request=req)
    assert r.model.model == "gpt-4.1-nano"


# ---- whose limit: the vendor's 429, or one of the gateway's own buckets ----


async def test_a_vendor_429_names_the_upstream_and_its_retry_after(sandbox: Sandbox) -> None:
    """Retries exhausted on a vendor that answers 429 with Retry-After (the emulator's: 1 s):
    the status names the upstream and the wait it asked for. The next call, refused while the
    upstream is held (its requests_per_minute bucket drained by that 429), names the vendor's
    limit too, not the gateway's bucket."""
    cfg = gateway_config(sandbox)
    cfg.resilience.retry.max_attempts = 2  # one retry, after the Retry-After's second
    for up in cfg.upstreams:
        up.requests_per_minute = 600  # our own limit of the upstream: far from reached
    gw = await start(cfg)
    opts = Options(model="gpt-4.1-mini", cache="bypass")
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}") as c:
            d = await expect_error(
                c.analyze(f"{DOC} [[sandbox-fault:429]]", Q, options=opts, timeout=30),
                grpc.StatusCode.UNAVAILABLE,
            )
            assert d.metadata["limit_owner"] == "upstream"  # type: ignore[attr-defined]
            assert d.metadata["upstream_status"] == "429"  # type: ignore[attr-defined]
            assert d.message.startswith(  # type: ignore[attr-defined]
                "upstream openai (gpt-4.1-mini) is rate limiting (HTTP 429, retry after 1.00s)"
            )
            assert d.retry_after_s == pytest.approx(1.0)  # type: ignore[attr-defined]
            # Held for that second: a call that cannot wait it is refused before sending.
            d = await expect_error(
                c.analyze(DOC, Q, options=opts, timeout=0.8), grpc.StatusCode.RESOURCE_EXHAUSTED
            )
        assert d.reason == "RATE_LIMITED"  # type: ignore[attr-defined]
        assert d.metadata["limit_owner"] == "upstream"  # type: ignore[attr-defined]
        subject = d.quota_violations[0][0]  # type: ignore[attr-defined]
        assert subject == "upstream:openai/throttled"
        assert d.message.startswith("upstream 'openai' is rate limiting")  # type: ignore[attr-defined]
        assert "requests_per_minute" not in d.message  # type: ignore[attr-defined]
    finally:
        await gw.stop(0.5)


async def test_our_own_bucket_names_our_limit(sandbox: Sandbox) -> None:
    tenant = TenantConfig(name="metered", api_keys=["k-metered"], requests_per_minute=1)
    gw = await start(gateway_config(sandbox, tenants=[tenant]))
    try:
        async with AsyncClient(f"127.0.0.1:{gw.port}", api_key="k-metered") as c:
            opts = Options(model="gpt-4.1-mini", cache="bypass")
            await c.analyze(DOC, Q, options=opts, timeout=30)
            d = await expect_error(
                c.analyze(DOC, Q, options=opts, timeout=1.5), grpc.StatusCode.RESOURCE_EXHAUSTED
            )
        assert d.reason == "RATE_LIMITED"  # type: ignore[attr-defined]
        assert d.metadata["limit_owner"] == "gateway"  # type: ignore[attr-defined]
        subject = d.quota_violations[0][0]  # type: ignore[attr-defined]
        assert subject == "tenant:metered/requests_per_minute"
        assert d.message.startswith(  # type: ignore[attr-defined]
            "the gateway's own limit tenant:metered/requests_per_minute is exhausted"
        )
    finally:
        await gw.stop(0.5)
