"""Tenants from API keys presented as ``authorization: Bearer <key>`` metadata."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import grpc

from longread_server.api.errors import ServiceError
from longread_server.config import TenantConfig

LOCAL_TENANT = "local"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    """Maps API keys to tenants. With no tenants configured, everyone is the local tenant.

    Keys are held as SHA-256 digests and looked up by digest, so the comparison does not
    leak a key's prefix through timing and the raw keys are not kept in memory here.
    """

    def __init__(self, tenants: Iterable[TenantConfig]) -> None:
        self._by_digest: dict[bytes, str] = {}
        for t in tenants:
            for key in t.api_keys:
                self._by_digest[_digest(key)] = t.name
        self.enabled = bool(self._by_digest)

    def tenant(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        if not self.enabled:
            return LOCAL_TENANT
        token = ""
        for k, v in metadata or ():
            if k == "authorization":
                value = v.decode() if isinstance(v, bytes) else v
                scheme, _, rest = value.partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
                break
        if not token:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "UNAUTHENTICATED",
                "missing API key: send metadata 'authorization: Bearer <key>'",
            )
        tenant = self._by_digest.get(_digest(token))
        if tenant is None:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "unknown API key"
            )
        return tenant
