"""Checks that what the settings point at can be used, before the gateway starts on it.

gRPC's core reports an unusable certificate or address on stderr in lines of its own and then
fails with a message that says only "failed to bind", so these are checked here first, where
the failure can be named: TLS files (readable, PEM, a key that matches its certificate and is
not encrypted), a listen address (host:port, a port that exists, a host that resolves, an
address that can be bound), and the URLs of Redis and the OTLP collector.

Each check raises :class:`Unusable`, naming which of its inputs is wrong; the caller turns it
into a configuration error naming the setting.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from redis.connection import parse_url

# The gRPC name resolvers an OTLP endpoint may name instead of a URL (``dns:///collector``).
_NOT_A_PORT = "the port is not a number from 0 to 65535"
_GRPC_SCHEMES = frozenset({"dns", "unix", "unix-abstract", "ipv4", "ipv6", "vsock", "xds"})


class Unusable(ValueError):
    """``what`` (one of the check's inputs) cannot be used, because ``why``."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(why)
        self.what = what
        self.why = why


@dataclass(frozen=True)
class TlsFiles:
    """The bytes gRPC's server credentials are made of."""

    key: bytes
    cert: bytes
    client_ca: bytes | None


class _EncryptedKey(Exception):
    """The key asked for a passphrase."""


def _read(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Unusable(what, f"cannot read {path}: {e.strerror or e}") from None


def _certificates(what: str, path: str) -> bytes:
    data = _read(what, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise Unusable(what, f"{path} is not a PEM certificate")
    try:
        ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as e:
        raise Unusable(what, f"{path}: unreadable certificate ({_reason(e)})") from None
    return data


def tls_files(cert_file: str, key_file: str, client_ca_file: str = "") -> TlsFiles:
    """The server's certificate chain, its key and the client CA, checked the way gRPC will
    use them. ``Unusable.what`` is ``cert_file``, ``key_file`` or ``client_ca_file``."""
    cert = _certificates("cert_file", cert_file)
    key = _read("key_file", key_file)
    if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", key):
        raise Unusable("key_file", f"{key_file} is not a PEM private key")

    def refuse_passphrase() -> str:
        raise _EncryptedKey

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            cert_file, key_file, password=refuse_passphrase
        )
    except _EncryptedKey:
        raise Unusable(
            "key_file", f"{key_file} is encrypted; gRPC needs the key unencrypted"
        ) from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise Unusable("key_file", f"{key_file} is not the key of {cert_file}") from None
        raise Unusable("key_file", f"{key_file}: unusable key ({_reason(e)})") from None
    except OSError as e:  # the files changed since they were read
        raise Unusable("key_file", f"cannot read {key_file}: {e.strerror or e}") from None
    ca = _certificates("client_ca_file", client_ca_file) if client_ca_file else None
    return TlsFiles(key=key, cert=cert, client_ca=ca)


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or e)


def split_listen(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` address (``[::1]:50051`` for IPv6), or None for
    a Unix socket (``unix:/path``), which gRPC takes as it is."""
    if address.startswith(("unix:", "unix-abstract:")):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise Unusable("address", f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # gRPC would take 99999 as 99999 % 65536: a typo would listen on another port.
    if not port.isdigit() or int(port) > 65535:
        raise Unusable("address", f"{address!r}: {_NOT_A_PORT}")
    return host, int(port)


def probe_listen(address: str) -> None:
    """Raises ``Unusable`` unless ``address`` can be listened on now: like gRPC, enough
    when one of the addresses its host resolves to can be bound."""
    parts = split_listen(address)
    if parts is None:
        return
    host, port = parts
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise Unusable("address", f"cannot resolve {host!r}: {e.strerror}") from None
    first: OSError | None = None
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as s:
            # As gRPC does: a port whose last connections linger in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(where)
            except OSError as e:
                first = first or e
            else:
                return
    why = first.strerror if first is not None and first.strerror else "no address to bind"
    raise Unusable("address", f"cannot listen on {address}: {why}")


# The schemes of a Redis Cluster and of a master found through Sentinel, each with the scheme
# of the data nodes' own connections.
REDIS_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
REDIS_SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What ``redis_url`` names: one node, a cluster (the nodes to start from) or a master
    found through Sentinel (the sentinels, and the master's ``service`` name)."""

    kind: str  # "node", "cluster" or "sentinel"
    scheme: str  # of the data nodes: redis or rediss
    auth: str  # "user:password@" or ""
    nodes: tuple[tuple[str, int], ...]
    tail: str  # of a data node's URL: /db and the query
    service: str = ""  # Sentinel's name of the master

    def node_url(self, host: str, port: int) -> str:
        """The URL of one data node (auth, path and query kept)."""
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{self.scheme}://{self.auth}{netloc}{self.tail}"


def redis_target(url: str) -> RedisTarget:
    """Parses ``redis_url``; raises ValueError naming what is wrong."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    kind = "node"
    if scheme in REDIS_CLUSTER_SCHEMES:
        kind, scheme = "cluster", REDIS_CLUSTER_SCHEMES[scheme]
    elif scheme in REDIS_SENTINEL_SCHEMES:
        kind, scheme = "sentinel", REDIS_SENTINEL_SCHEMES[scheme]
    if kind == "node":
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        return RedisTarget("node", scheme, "", (), "")
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        end = min(end, at) if at >= 0 else end
    auth, _, hosts = rest[:end].rpartition("@")
    nodes: list[tuple[str, int]] = []
    default_port = 26379 if kind == "sentinel" else 6379
    for entry in hosts.split(","):
        parts = urlsplit(f"//{entry.strip()}")
        try:
            port = parts.port or default_port
        except ValueError:
            raise ValueError(f"{entry!r}: {_NOT_A_PORT}") from None
        if not parts.hostname:
            raise ValueError(f"{entry!r} names no host")
        nodes.append((parts.hostname, port))
    tail = urlsplit(rest[end:])
    path = [unquote(p) for p in tail.path.split("/") if p]
    service = ""
    if kind == "sentinel":
        if not path:
            raise ValueError("names no Sentinel service (.../service_name[/db])")
        service, path = path[0], path[1:]
    elif path and path != ["0"]:
        raise ValueError("a Redis Cluster has only database 0")
    query = f"?{tail.query}" if tail.query else ""
    data_tail = f"/{path[0] if path else 0}{query}"
    target = RedisTarget(kind, scheme, auth + "@" if auth else "", tuple(nodes), data_tail, service)
    parse_url(target.node_url(*nodes[0]))  # type: ignore[no-untyped-call]
    return target


def check_redis_url(url: str) -> None:
    """A URL the Redis client can connect with (whether Redis is up is not checked)."""
    try:
        redis_target(url)
    except ValueError as e:
        raise Unusable("url", str(e)) from None


def check_otlp_endpoint(endpoint: str) -> None:
    """An endpoint as the OTLP exporters take it: ``http://``, ``https://`` or ``grpc://``
    host[:port], or a gRPC target (``collector:4317``, ``dns:///collector:4317``)."""
    if not endpoint.strip() or any(c.isspace() for c in endpoint):
        raise Unusable("endpoint", f"{endpoint!r} is not a URL or host:port")
    scheme, sep, _ = endpoint.partition("://")
    if sep and scheme.lower() in ("http", "https", "grpc"):
        parts = urlsplit(endpoint)
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise Unusable("endpoint", f"{endpoint!r}: {_NOT_A_PORT}") from None
        if not parts.hostname:
            raise Unusable("endpoint", f"{endpoint!r} names no host")
        return
    if sep:
        if scheme.lower() not in _GRPC_SCHEMES:
            raise Unusable(
                "endpoint", f"{endpoint!r}: scheme {scheme!r} is not http, https or grpc"
            )
        return
    prefix, colon, port = endpoint.rpartition(":")
    if colon and prefix.lower() not in _GRPC_SCHEMES and not (port.isdigit() and int(port) < 65536):
        raise Unusable("endpoint", f"{endpoint!r}: {_NOT_A_PORT}")
