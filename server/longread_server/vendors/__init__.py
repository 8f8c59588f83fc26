"""Vendor adapters: map the vendor-neutral ``LlmRequest`` to OpenAI Chat Completions or
Anthropic Messages over one shared HTTP client (``vendors/transport.py``), and vendor responses
(JSON or SSE) back to ``LlmEvent``s, with every failure normalized to ``UpstreamError``."""

from __future__ import annotations

from typing import Any

from longread_server.domain import VendorKind
from longread_server.vendors.anthropic import AnthropicAdapter
from longread_server.vendors.base import VendorAdapter
from longread_server.vendors.openai import OpenAIAdapter
from longread_server.vendors.sse import ServerSentEvent, SSEDecoder, aiter_sse
from longread_server.vendors.transport import HttpClient

__all__ = [
    "AnthropicAdapter",
    "OpenAIAdapter",
    "SSEDecoder",
    "ServerSentEvent",
    "VendorAdapter",
    "aiter_sse",
    "make_adapter",
]


def make_adapter(
    kind: VendorKind,
    client: HttpClient,
    *,
    name: str,
    base_url: str,
    api_key: str,
    **kw: Any,
) -> VendorAdapter:
    """The adapter for an upstream of ``kind``. ``kw`` goes to the adapter's constructor:
    ``extra_headers`` (all), ``version`` (Anthropic)."""
    if kind is VendorKind.ANTHROPIC:
        return AnthropicAdapter(client, name=name, base_url=base_url, api_key=api_key, **kw)
    if kind is VendorKind.OPENAI or kind is VendorKind.OPENAI_COMPATIBLE:
        return OpenAIAdapter(
            client,
            name=name,
            base_url=base_url,
            api_key=api_key,
            compatible=kind is VendorKind.OPENAI_COMPATIBLE,
            **kw,
        )
    raise ValueError(f"unknown vendor kind: {kind!r}")
