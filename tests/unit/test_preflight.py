"""Start-up checks of what the settings point at: TLS files, addresses, URLs."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from longread_server import preflight
from longread_server.config import ConfigError, load_config

from tests.certs import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("certs")
    found = make_certs(where)
    subprocess.run(
        [
            "openssl",
            "rsa",
            "-in",
            "server.key",
            "-aes256",
            "-passout",
            "pass:pw",
            "-out",
            "enc.key",
        ],
        check=True,
        capture_output=True,
        cwd=where,
    )
    (where / "junk.pem").write_text("not a certificate\n")
    return {**found, "enc.key": where / "enc.key", "junk.pem": where / "junk.pem"}


@pytest.fixture
def taken() -> Iterator[int]:
    """A port this process listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_usable_tls_files_are_read(certs: dict[str, Path]) -> None:
    files = preflight.tls_files(
        str(certs["server.pem"]), str(certs["server.key"]), str(certs["ca.pem"])
    )
    assert files.cert == certs["server.pem"].read_bytes() and files.client_ca is not None


@pytest.mark.parametrize(
    ("cert", "key", "ca", "what", "why"),
    [
        ("missing.pem", "server.key", "", "cert_file", "cannot read"),
        ("junk.pem", "server.key", "", "cert_file", "is not a PEM certificate"),
        ("server.pem", "server.pem", "", "key_file", "is not a PEM private key"),
        ("server.pem", "client.key", "", "key_file", "is not the key of"),
        ("server.pem", "enc.key", "", "key_file", "is encrypted"),
        ("server.pem", "server.key", "server.key", "client_ca_file", "is not a PEM certificate"),
    ],
)
def test_unusable_tls_files_are_named(
    certs: dict[str, Path], cert: str, key: str, ca: str, what: str, why: str
) -> None:
    def at(name: str) -> str:
        return str(certs[name]) if name in certs else str(certs["ca.pem"].parent / name)

    with pytest.raises(preflight.Unusable) as caught:
        preflight.tls_files(at(cert), at(key), at(ca) if ca else "")
    assert caught.value.what == what and why in caught.value.why


def test_load_config_checks_the_tls_files(certs: dict[str, Path]) -> None:
    env = {"LONGREAD_TLS__CERT_FILE": str(certs["junk.pem"])}
    env["LONGREAD_TLS__KEY_FILE"] = str(certs["server.key"])
    with pytest.raises(ConfigError, match=r"^tls.cert_file \(LONGREAD_TLS__CERT_FILE\): .* PEM"):
        load_config(None, env)
    with pytest.raises(ConfigError, match=r"^tls.key_file \(LONGREAD_TLS__KEY_FILE\): needs"):
        load_config(None, {"LONGREAD_TLS__KEY_FILE": str(certs["server.key"])})


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("localhost", "is not host:port"),
        (":50051", "is not host:port"),
        ("127.0.0.1:99999", "the port is not a number from 0 to 65535"),
        ("127.0.0.1:http", "the port is not a number from 0 to 65535"),
    ],
)
def test_a_malformed_listen_address(address: str, why: str) -> None:
    with pytest.raises(preflight.Unusable, match=why):
        preflight.split_listen(address)
    with pytest.raises(ConfigError, match=r"^listen \(LONGREAD_LISTEN\): "):
        load_config(None, {"LONGREAD_LISTEN": address})


def test_the_listen_probe(taken: int) -> None:
    preflight.probe_listen("127.0.0.1:0")
    preflight.probe_listen("[::1]:0" if socket.has_ipv6 else "127.0.0.1:0")
    with pytest.raises(preflight.Unusable, match="Address already in use"):
        preflight.probe_listen(f"127.0.0.1:{taken}")
    with pytest.raises(preflight.Unusable, match=r"cannot resolve 'no-such-host\.invalid'"):
        preflight.probe_listen("no-such-host.invalid:50051")


@pytest.mark.parametrize(
    ("setting", "value", "ok"),
    [
        ("REDIS_URL", "redis://localhost:6379/0", True),
        ("REDIS_URL", "unix:///run/redis.sock", True),
        ("REDIS_URL", "localhost:6379", False),
        ("REDIS_URL", "redis://localhost:port", False),
        ("REDIS_URL", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000", True),
        ("REDIS_URL", "rediss+cluster://u:p@[fd00::1]:7000/0?ssl_cert_reqs=none", True),
        ("REDIS_URL", "redis+cluster://10.0.0.1:7000,10.0.0.2:port", False),
        ("REDIS_URL", "redis+cluster://10.0.0.1:7000/1", False),  # a cluster has db 0 only
        ("REDIS_URL", "redis+cluster://:7000", False),
        ("REDIS_URL", "redis+sentinel://s1:26379,s2:26379/mymaster/2", True),
        ("REDIS_URL", "redis+sentinel://s1:26379", False),  # which master?
        ("TELEMETRY__OTLP_ENDPOINT", "http://collector:4317", True),
        ("TELEMETRY__OTLP_ENDPOINT", "collector:4317", True),
        ("TELEMETRY__OTLP_ENDPOINT", "dns:///collector:4317", True),
        ("TELEMETRY__OTLP_ENDPOINT", "ftp://collector", False),
        ("TELEMETRY__OTLP_ENDPOINT", "http://:4317", False),
        ("TELEMETRY__OTLP_ENDPOINT", "https://collector:99999", False),
        ("TELEMETRY__OTLP_ENDPOINT", "collector:otlp", False),
    ],
)
def test_urls_are_checked_at_load(setting: str, value: str, ok: bool) -> None:
    env = {"LONGREAD_" + setting: value}
    if ok:
        load_config(None, env)
        return
    with pytest.raises(ConfigError, match=rf"\(LONGREAD_{setting}\): "):
        load_config(None, env)


def test_what_a_redis_url_names() -> None:
    node = preflight.redis_target("redis://localhost:6379/0")
    assert node.kind == "node"
    cluster = preflight.redis_target("rediss+cluster://u:p%40ss@a:7000,[fd00::1]:7001,b?x=1")
    assert cluster.kind == "cluster" and cluster.scheme == "rediss"
    assert cluster.nodes == (("a", 7000), ("fd00::1", 7001), ("b", 6379))
    assert cluster.node_url("fd00::1", 7001) == "rediss://u:p%40ss@[fd00::1]:7001/0?x=1"
    sentinel = preflight.redis_target("redis+sentinel://s1:26379,s2/my%20master/3")
    assert (sentinel.kind, sentinel.service, sentinel.nodes) == (
        "sentinel",
        "my master",
        (("s1", 26379), ("s2", 26379)),  # Sentinel's own default port
    )
    assert sentinel.node_url("m", 6379) == "redis://m:6379/3"
