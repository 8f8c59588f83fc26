"""The provider and server address telemetry gives an upstream (``vendors/peer.py``): the
setting first, then the well-known API host, then the protocol; never the configured name."""

from __future__ import annotations

import pytest
from longread_server.config import _WELL_KNOWN
from longread_server.domain import VendorKind
from longread_server.vendors.peer import Peer, provider_name
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiProviderNameValues,
)

OPENAI, ANTHROPIC, COMPATIBLE = (
    VendorKind.OPENAI,
    VendorKind.ANTHROPIC,
    VendorKind.OPENAI_COMPATIBLE,
)
REGISTRY = {v.value for v in GenAiProviderNameValues}


@pytest.mark.parametrize(
    ("kind", "base_url", "provider"),
    [
        (OPENAI, "https://api.openai.com/v1", "openai"),
        (ANTHROPIC, "https://api.anthropic.com", "anthropic"),
        (COMPATIBLE, "https://generativelanguage.googleapis.com/v1beta/openai", "gcp.gemini"),
        (COMPATIBLE, "https://api.deepseek.com/v1", "deepseek"),
        (COMPATIBLE, "https://my-resource.openai.azure.com/openai/v1", "azure.ai.openai"),
        (COMPATIBLE, "https://proj.services.ai.azure.com/models", "azure.ai.inference"),
        (
            COMPATIBLE,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/"
            "endpoints/openapi",
            "gcp.vertex_ai",
        ),
        (COMPATIBLE, "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1", "aws.bedrock"),
        (COMPATIBLE, "https://api.groq.com/openai/v1", "groq"),
        (COMPATIBLE, "https://api.mistral.ai/v1", "mistral_ai"),
        (COMPATIBLE, "https://api.x.ai/v1", "x_ai"),
        (COMPATIBLE, "https://API.DeepSeek.com./v1", "deepseek"),  # case, a trailing dot
        # Not a well-known host: the protocol spoken.
        (COMPATIBLE, "http://localhost:8000/v1", "openai"),
        (COMPATIBLE, "https://api.moonshot.ai/v1", "openai"),  # not in the conventions' list
        (COMPATIBLE, "https://s3.us-west-2.amazonaws.com/v1", "openai"),  # AWS, not Bedrock
        (COMPATIBLE, "https://api.openai.com.example.net/v1", "openai"),  # only a prefix
        (ANTHROPIC, "http://127.0.0.1:9000", "anthropic"),
    ],
)
def test_the_provider_of_a_base_url(kind: VendorKind, base_url: str, provider: str) -> None:
    assert provider_name(kind, base_url) == provider
    assert provider in REGISTRY  # every value the rule derives is on the conventions' list


def test_the_setting_wins_and_may_name_what_the_list_does_not() -> None:
    assert provider_name(COMPATIBLE, "http://10.0.0.7/v1", "gcp.gemini") == "gcp.gemini"
    assert provider_name(COMPATIBLE, "https://api.moonshot.ai/v1", "moonshot") == "moonshot"


def test_the_well_known_upstreams_are_named_from_their_hosts_not_their_names() -> None:
    named = {name: provider_name(kind, url) for name, kind, url, _ in _WELL_KNOWN}
    assert named == {
        "openai": "openai",
        "anthropic": "anthropic",
        "deepseek": "deepseek",
        "moonshot": "openai",
        "gemini": "gcp.gemini",
    }


def test_server_address_and_port() -> None:
    assert Peer.of(OPENAI, "https://api.openai.com/v1").attributes == {
        "gen_ai.provider.name": "openai",
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    local = Peer.of(COMPATIBLE, "http://[::1]:8000/v1")
    assert (local.address, local.port) == ("::1", 8000)
    assert Peer.of(COMPATIBLE, "http://vllm.internal/v1").port == 80
    # No URL (a pipeline given no peers): the provider alone.
    assert Peer.of(ANTHROPIC, "").attributes == {"gen_ai.provider.name": "anthropic"}
