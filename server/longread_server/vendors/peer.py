"""An upstream as telemetry names it: its GenAI provider and the server it is reached at.

``gen_ai.provider.name`` follows the GenAI semantic conventions' list of well-known values.
The conventions make it a discriminator of the telemetry's flavour ("set based on the
instrumentation's best knowledge"; ``server.address`` and the model names say which system
actually answered), so the rule is, in order:

1. the upstream's ``provider`` setting, when the operator gave one (any value: the list is
   open, and only the operator knows what sits behind a private URL);
2. the well-known provider whose API host the base URL names (``api.openai.com`` is
   ``openai``, ``generativelanguage.googleapis.com`` is ``gcp.gemini``, an Azure OpenAI
   resource is ``azure.ai.openai``...);
3. otherwise the provider whose wire protocol the upstream speaks: ``openai`` for OpenAI and
   OpenAI-compatible servers, ``anthropic`` for the Messages API.

The upstream's configured name is never used: it is the operator's word for a route
("gemini", "local", "eu-prod"), and as a provider it would read as a value of the list that
it is not (``gemini`` for ``gcp.gemini``) or split one provider's telemetry under many names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from longread_server.domain import VendorKind

# Values of gen_ai.provider.name (the conventions' well-known list) by API host: the host
# itself or any subdomain of it (Azure resources, cloud regions).
_BY_HOST: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure.ai.openai"),
    ("services.ai.azure.com", "azure.ai.inference"),
    ("models.ai.azure.com", "azure.ai.inference"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),  # and regional hosts: _provider_of_host
    ("amazonaws.com", "aws.bedrock"),  # only bedrock-runtime hosts: see _provider_of_host
    ("api.deepseek.com", "deepseek"),
    ("api.groq.com", "groq"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("ml.cloud.ibm.com", "ibm.watsonx.ai"),
)
_BY_PROTOCOL = {
    VendorKind.OPENAI: "openai",
    VendorKind.OPENAI_COMPATIBLE: "openai",
    VendorKind.ANTHROPIC: "anthropic",
}
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True)
class Peer:
    """What every model call to one upstream carries in telemetry (spans and metrics)."""

    provider: str
    address: str = ""  # server.address: the base URL's host ("" when unknown)
    port: int = 0  # server.port (0 when unknown)
    attributes: dict[str, str | int] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        attrs: dict[str, str | int] = {"gen_ai.provider.name": self.provider}
        if self.address:
            attrs["server.address"] = self.address
            if self.port:
                attrs["server.port"] = self.port
        object.__setattr__(self, "attributes", attrs)

    @classmethod
    def of(cls, kind: VendorKind, base_url: str, provider: str = "") -> Peer:
        """The peer of an upstream of ``kind`` at ``base_url`` (``provider``: the setting)."""
        try:
            parts = urlsplit(base_url)
            host = parts.hostname or ""
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        except ValueError:  # not a URL: configuration checks refuse it before any call
            host, port = "", 0
        name = provider or _provider_of_host(host) or _BY_PROTOCOL[kind]
        return cls(name, host, port if host else 0)


def provider_name(kind: VendorKind, base_url: str, provider: str = "") -> str:
    """``gen_ai.provider.name`` for an upstream (the rule in the module docstring)."""
    return Peer.of(kind, base_url, provider).provider


def _provider_of_host(host: str) -> str:
    host = host.lower().rstrip(".")
    if host.endswith("-aiplatform.googleapis.com"):  # Vertex AI's regional endpoints
        return "gcp.vertex_ai"
    for domain, name in _BY_HOST:
        if host == domain or host.endswith("." + domain):
            if name == "aws.bedrock" and not host.startswith("bedrock-runtime"):
                continue  # other AWS services are no GenAI provider
            return name
    return ""
