"""The remembered cache keys: the same as computing them, per tenant, and bounded."""

from __future__ import annotations

import httpx
from longread_server.calls import cache as cache_module
from longread_server.calls.cache import build_response_cache
from longread_server.calls.pipeline import Call, CallContext
from longread_server.config import CacheConfig
from longread_server.domain import LlmRequest, Message
from longread_server.vendors.openai import OpenAIAdapter

ADAPTER = OpenAIAdapter(httpx.AsyncClient(), name="openai", base_url="http://x/v1", api_key="k")


def call(text: str, tenant: str = "acme", model: str = "gpt-4.1-mini") -> Call:
    req = LlmRequest(model=model, messages=(Message("user", text),), max_output_tokens=100)
    return Call("openai", ADAPTER, req, CallContext(tenant=tenant))


def test_remembered_keys_equal_computed_keys() -> None:
    cache = build_response_cache(CacheConfig())
    for c in [call("a"), call("b"), call("a", model="gpt-4o"), call("a", tenant="other")]:
        assert cache.remembered_key(c) == cache.key_now(c)
        assert cache.remembered_key(c) == cache.key_now(c)  # from the memo this time
    keys = {cache.remembered_key(c) for c in [call("a"), call("a", tenant="other")]}
    assert len(keys) == 2  # tenants do not share answers unless configured to


def test_shared_answers_share_keys_across_tenants() -> None:
    cache = build_response_cache(CacheConfig(share_across_tenants=True))
    assert cache.remembered_key(call("a")) == cache.remembered_key(call("a", tenant="other"))


def test_the_memo_is_bounded() -> None:
    cache = build_response_cache(CacheConfig())
    for i in range(cache_module._MEMO_KEYS + 50):
        cache.remembered_key(call(f"question {i}"))
    assert len(cache._keys) == cache_module._MEMO_KEYS
    assert cache.remembered_key(call("question 0")) == cache.key_now(call("question 0"))
