"""Test certificates: a CA, a server certificate for 127.0.0.1/localhost and a client one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from longread_server.config import TlsConfig


def make_certs(tmp: Path) -> dict[str, Path]:
    """A CA, a server cert for 127.0.0.1/localhost and a client cert, made with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=longread-test-ca",
    )
    (tmp / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        )
    return {p.stem + p.suffix: p for p in tmp.iterdir()}


def mutual_tls(certs: dict[str, Path]) -> TlsConfig:
    """The gateway's TLS settings for ``make_certs``' files: its certificate, and clients must
    present one signed by the test CA."""
    return TlsConfig(
        cert_file=str(certs["server.pem"]),
        key_file=str(certs["server.key"]),
        client_ca_file=str(certs["ca.pem"]),
    )
