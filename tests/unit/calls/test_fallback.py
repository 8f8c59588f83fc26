"""The fallback stage: which failures move a call down its chain, to which model, and how the
answer is labelled and cached (under the key of the request that answered)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from longread_server.calls.breaker import CIRCUIT
from longread_server.calls.cache import CacheStage, build_response_cache
from longread_server.calls.fallback import FallbackStage, chains_from, trigger
from longread_server.calls.pipeline import Call, CallStage
from longread_server.calls.singleflight import SingleFlightStage
from longread_server.config import CacheConfig, FallbackChainConfig, UpstreamConfig
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    FallbackReason,
    Finish,
    UpstreamError,
    VendorKind,
)
from longread_server.plan.catalog import Catalog
from longread_server.state.breakers import BreakerParams, LocalBreakers, Outcome
from longread_server.vendors.errors import is_context_overflow

from tests.clock import FakeClock
from tests.unit.calls.support import (
    Attempt,
    FakeAdapter,
    Upstream,
    chain,
    collect,
    err,
    make_call,
    ok,
)

P = BreakerParams(window_size=4, min_calls=4, slow_rate=0.5, half_open_calls=1, open_s=30)
OVERFLOW_OPENAI = UpstreamError(
    ErrorKind.BAD_REQUEST,
    "This model's maximum context length is 128000 tokens. However, your messages resulted "
    "in 131072 tokens.",
    status=400,
    vendor_type="invalid_request_error",
    vendor_code="context_length_exceeded",
)
OVERFLOW_ANTHROPIC = UpstreamError(
    ErrorKind.BAD_REQUEST,
    "anthropic: HTTP 400 Bad Request (invalid_request_error)",
    detail="prompt is too long: 210000 tokens > 200000 maximum",  # the vendor's words
    status=400,
    vendor_type="invalid_request_error",
)


def stage(
    *configured: FallbackChainConfig, fallback: str = "", breakers: LocalBreakers | None = None
) -> FallbackStage:
    ups = [
        UpstreamConfig("openai", VendorKind.OPENAI, "http://x", fallback=fallback),
        UpstreamConfig("anthropic", VendorKind.ANTHROPIC, "http://y", models=["claude-haiku-4-5"]),
    ]
    adapters = {"openai": FakeAdapter(), "anthropic": FakeAdapter()}
    return FallbackStage(
        breakers or LocalBreakers(FakeClock()),
        P,
        {u.name: u for u in ups},
        adapters,
        Catalog.builtin(),
        chains_from(ups, configured),
    )


def routed(upstream: Upstream) -> list[tuple[str, str]]:
    return [(c.vendor, c.req.model) for c in upstream.calls]


def finish_of(events: Sequence[object]) -> Finish:
    last = events[-1]
    assert isinstance(last, Finish)
    return last


def test_vendors_context_overflow_errors_are_recognised() -> None:
    assert is_context_overflow(OVERFLOW_OPENAI) and is_context_overflow(OVERFLOW_ANTHROPIC)
    assert not is_context_overflow(err(ErrorKind.BAD_REQUEST))  # any other 400
    assert not is_context_overflow(
        UpstreamError(ErrorKind.SERVER, "x", detail="prompt is too long")
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CallRejected("UPSTREAM_UNAVAILABLE", "open", metadata={CIRCUIT: "open"}), "circuit_open"),
        (err(ErrorKind.RATE_LIMITED), "rate_limited"),
        (
            CallRejected("RATE_LIMITED", "held", quota_subject="upstream:openai/throttled"),
            "rate_limited",
        ),
        (err(ErrorKind.SERVER), "upstream_error"),
        (err(ErrorKind.OVERLOADED), "upstream_error"),
        (OVERFLOW_OPENAI, "context_overflow"),
        (err(ErrorKind.BAD_REQUEST), None),
        (err(ErrorKind.AUTH), None),
        (err(ErrorKind.SERVER, streamed=True), None),  # an answer had begun: committed
        (err(ErrorKind.TIMEOUT, cut_by_deadline=True), None),
        (CallRejected("RATE_LIMITED", "ours", quota_subject="tenant:acme"), None),
    ],
)
def test_what_moves_a_call_down_its_chain(error: Exception, reason: str | None) -> None:
    got = trigger(error)
    assert (got.value if got else None) == reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (err(ErrorKind.RATE_LIMITED), FallbackReason.RATE_LIMITED),
        (err(ErrorKind.SERVER), FallbackReason.UPSTREAM_ERROR),
        (OVERFLOW_OPENAI, FallbackReason.CONTEXT_OVERFLOW),
    ],
)
async def test_the_next_model_answers_and_the_finish_says_which_and_why(
    error: Exception, reason: FallbackReason
) -> None:
    # gpt-4o-mini (128K): claude-haiku-4-5's 200K window fits an overflow too.
    upstream = Upstream([Attempt(error=error), Attempt(ok())])
    call = make_call(model="gpt-4o-mini")
    events = await collect(chain([stage(fallback="anthropic")], upstream), call)
    assert routed(upstream) == [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5")]
    note = finish_of(events).fallback
    assert note is not None and note.reason is reason
    assert (note.model.vendor, note.model.model) == ("anthropic", "claude-haiku-4-5")
    assert (note.from_upstream, note.from_model) == ("openai", "gpt-4o-mini")


async def test_an_overflow_with_no_larger_window_in_the_chain_fails_as_it_is() -> None:
    """gpt-4.1-mini (1M) overflowed: claude-haiku-4-5 (200K) cannot hold more."""
    upstream = Upstream([Attempt(error=OVERFLOW_OPENAI), Attempt(ok())])
    with pytest.raises(UpstreamError) as e:
        await collect(chain([stage(fallback="anthropic")], upstream), make_call())
    assert e.value is OVERFLOW_OPENAI and len(upstream.calls) == 1


async def test_an_open_circuit_skips_the_primary_and_a_healthy_call_has_no_note() -> None:
    breakers = LocalBreakers(FakeClock())
    fb = stage(fallback="anthropic", breakers=breakers)
    healthy = Upstream([Attempt(ok())])
    assert finish_of(await collect(chain([fb], healthy), make_call())).fallback is None
    for _ in range(4):
        permit = await breakers.acquire("openai", P)
        await breakers.record("openai", P, permit, Outcome.FAILURE)
    upstream = Upstream([Attempt(ok())])
    events = await collect(chain([fb], upstream), make_call())
    assert routed(upstream) == [("anthropic", "claude-haiku-4-5")]
    note = finish_of(events).fallback
    assert note is not None and note.reason is FallbackReason.CIRCUIT_OPEN


async def test_other_failures_and_answers_already_streaming_are_not_rerouted() -> None:
    for error in (err(ErrorKind.BAD_REQUEST), err(ErrorKind.AUTH)):
        upstream = Upstream([Attempt(error=error), Attempt(ok())])
        with pytest.raises(UpstreamError):
            await collect(chain([stage(fallback="anthropic")], upstream), make_call())
        assert len(upstream.calls) == 1
    half = Upstream([Attempt(ok()[:1], error=err(ErrorKind.SERVER)), Attempt(ok())])
    with pytest.raises(UpstreamError):
        await collect(chain([stage(fallback="anthropic")], half), make_call())
    assert len(half.calls) == 1


async def test_an_overflow_goes_only_to_a_model_with_a_larger_window() -> None:
    """gpt-4o (128K) overflowed: gpt-4o-mini (also 128K) would refuse too and is skipped;
    claude-haiku-4-5 (200K) is taken."""
    chain_cfg = FallbackChainConfig(
        chain=["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"], upstream="openai"
    )
    upstream = Upstream([Attempt(error=OVERFLOW_OPENAI), Attempt(ok())])
    await collect(chain([stage(chain_cfg)], upstream), make_call(model="gpt-4o"))
    assert routed(upstream) == [("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5")]
    # A 5xx is no reason to skip the same-window model: the chain's order holds.
    upstream = Upstream([Attempt(error=err(ErrorKind.SERVER)), Attempt(ok())])
    await collect(chain([stage(chain_cfg)], upstream), make_call(model="gpt-4o"))
    assert routed(upstream) == [("openai", "gpt-4o"), ("openai", "gpt-4o-mini")]


async def test_the_chain_is_walked_in_order_and_a_model_chain_wins() -> None:
    per_model = FallbackChainConfig(
        chain=["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"], model="gpt-4.1-mini"
    )
    upstream = Upstream(
        [
            Attempt(error=err(ErrorKind.SERVER)),
            Attempt(error=err(ErrorKind.RATE_LIMITED)),
            Attempt(ok()),
        ]
    )
    events = await collect(chain([stage(per_model, fallback="anthropic")], upstream), make_call())
    assert routed(upstream) == [
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-haiku-4-5"),
    ]
    note = finish_of(events).fallback
    assert note is not None and note.reason is FallbackReason.RATE_LIMITED  # why it left the last


async def test_only_the_configured_triggers_and_the_opt_out_label() -> None:
    only_circuit = FallbackChainConfig(chain=["anthropic"], upstream="openai", on=["circuit_open"])
    upstream = Upstream([Attempt(error=err(ErrorKind.SERVER)), Attempt(ok())])
    with pytest.raises(UpstreamError):
        await collect(chain([stage(only_circuit)], upstream), make_call())
    upstream = Upstream([Attempt(error=err(ErrorKind.SERVER)), Attempt(ok())])
    with pytest.raises(UpstreamError):
        await collect(
            chain([stage(fallback="anthropic")], upstream), make_call(labels={"fallback": "off"})
        )
    assert len(upstream.calls) == 1


async def test_nothing_in_the_chain_answers_the_primarys_error_surfaces() -> None:
    first = err(ErrorKind.RATE_LIMITED)
    upstream = Upstream([Attempt(error=first), Attempt(error=err(ErrorKind.SERVER))])
    with pytest.raises(UpstreamError) as e:
        await collect(chain([stage(fallback="anthropic")], upstream), make_call())
    assert e.value is first and len(upstream.calls) == 2


async def test_the_answer_is_cached_under_the_answering_requests_key_only() -> None:
    """The primary's key stays empty (a later call goes to the primary again); the fallback's
    key holds the answer, and is read when the call falls back again."""
    cache = build_response_cache(CacheConfig())
    fb = dataclasses.replace(stage(fallback="anthropic"), cache=cache)
    stages: list[CallStage] = [CacheStage(cache), SingleFlightStage(cache), fb]
    call = make_call()
    failing = Upstream([Attempt(error=err(ErrorKind.SERVER)), Attempt(ok("from haiku"))])
    first = await collect(chain(stages, failing), call)
    assert finish_of(first).fallback is not None and not finish_of(first).cached
    alt = fb.reroute(call, "anthropic")
    assert alt is not None
    assert await cache.read(await _key(cache, call)) is None
    stored = await cache.read(await _key(cache, alt[0]))
    assert stored is not None and stored.text == "from haiku"
    # Still failing: the primary is tried (a miss under its key), then the fallback's answer
    # is read from the cache under its own key, still labelled as the fallback's.
    failing_again = Upstream([Attempt(error=err(ErrorKind.SERVER))])
    replayed = await collect(chain(stages, failing_again), call)
    done = finish_of(replayed)
    assert done.cached and done.fallback is not None
    assert done.fallback.model.model == "claude-haiku-4-5"
    assert routed(failing_again) == [("openai", "gpt-4.1-mini")]  # haiku was not called
    # The primary is healthy again: it answers, never a HIT from another model.
    healthy = Upstream([Attempt(ok("from gpt"))])
    again = await collect(chain(stages, healthy), call)
    assert routed(healthy) == [("openai", "gpt-4.1-mini")] and finish_of(again).fallback is None
    assert not finish_of(again).cached


async def _key(cache: object, call: Call) -> str:
    key = await cache.key(call)  # type: ignore[attr-defined]
    assert isinstance(key, str)
    return key


def test_a_fallback_model_gets_prompt_caching_only_as_it_allows() -> None:
    from longread_server.calls.fallback import _for_model
    from longread_server.domain import LlmRequest, Message

    catalog = Catalog.builtin()
    req = LlmRequest(
        model="gpt-5",
        messages=(Message("user", "<document>...</document>"), Message("user", "Question: q")),
        max_output_tokens=100,
        cache_prefix_messages=1,
        cache_prefix_tokens=2000,
        prompt_cache_retention="24h",
    )

    def moved(vendor: str, model: str) -> tuple[int, str]:
        info = catalog.get(vendor, model)
        assert info is not None
        out = _for_model(req, info)
        assert out.model == model
        return out.cache_prefix_messages, out.prompt_cache_retention

    assert moved("anthropic", "claude-sonnet-4-5") == (1, "")  # 2000 >= 1024
    assert moved("anthropic", "claude-haiku-4-5") == (0, "")  # 2000 < 4096: no breakpoint
    assert moved("openai", "gpt-4.1") == (1, "24h")
    assert moved("openai", "gpt-4o") == (1, "")  # no extended retention there
    off = dataclasses.replace(req, prompt_cache_retention="")  # turned off by configuration
    info = catalog.get("openai", "gpt-4.1")
    assert info is not None and _for_model(off, info).prompt_cache_retention == ""
