"""The ``longread`` command against a real gateway, run as a user runs it: a subprocess.

Failures must be one line on stderr with a hint and the documented exit code (2: refused
before any call; 1: the call failed), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from longread_sandbox import Sandbox
from longread_server.app import Gateway, start

from tests.certs import make_certs, mutual_tls
from tests.conftest import gateway_config

pytestmark = pytest.mark.timeout(120)


@dataclass
class Run:
    code: int
    out: str
    err: str


async def longread(*args: str, stdin: bytes | None = None) -> Run:
    """Runs the CLI in a child process without blocking the loop the gateway serves on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGREAD_")}
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "longread.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(p.communicate(stdin), 60)
    assert p.returncode is not None
    return Run(p.returncode, out.decode(), err.decode())


def one_error_line(r: Run, code: int) -> str:
    assert r.code == code, r
    assert "Traceback" not in r.err
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("longread: error: ") and "; hint: " in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


DOC = "The Northfield plant opened in 1932.\r\nIt was delayed by the flood of 1931.\r\n"


async def test_missing_file(tmp_path: Path) -> None:
    line = one_error_line(await longread("estimate", str(tmp_path / "nope.md"), "-q", "x"), 2)
    assert "nope.md: no such file" in line


async def test_undecodable_file_names_the_flag(tmp_path: Path) -> None:
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    line = one_error_line(await longread("estimate", str(f), "-q", "x"), 2)
    assert "not valid utf-8 (byte 0xe9 at offset 3)" in line and "--encoding" in line


async def test_usage_error_is_one_line() -> None:
    line = one_error_line(await longread("estimate", "doc.md"), 2)
    assert "-q/--question" in line


async def test_unreachable_names_target_and_serve() -> None:
    target = f"127.0.0.1:{free_port()}"
    for cmd in (["estimate", "-", "-q", "x"], ["health"]):
        r = await longread(*cmd, "--target", target, stdin=b"text")
        line = one_error_line(r, 1)
        assert f"cannot reach a gateway at {target}" in line and "longread serve" in line


async def test_invalid_model_says_it_once(gateway: Gateway, tmp_path: Path) -> None:
    f = tmp_path / "doc.txt"
    f.write_text(DOC)
    args = ("--target", f"127.0.0.1:{gateway.port}", "--model", "no-such-model")
    line = one_error_line(await longread("estimate", str(f), "-q", "when?", *args), 1)
    assert line.startswith("longread: error: INVALID_ARGUMENT: ")
    assert line.count("no-such-model") == 1, line


async def test_crlf_offsets_match_the_file(gateway: Gateway, tmp_path: Path) -> None:
    f = tmp_path / "crlf.txt"
    f.write_bytes(DOC.encode())
    target = ("--target", f"127.0.0.1:{gateway.port}")
    r = await longread("analyze", str(f), "-q", "When did it open?", "--json", *target)
    assert r.code == 0, r.err
    chunks = json.loads(r.out)["plan"]["chunks"]
    # Code points of the file as it is on disk: the CRs count.
    assert int(chunks[-1]["end"]) == len(DOC)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"\xef\xbb\xbf" + DOC.encode(), None),  # UTF-8 with BOM; the BOM is not text
        (DOC.encode("utf-16"), None),  # BOM picks UTF-16
        (DOC.replace("1932", "1932 \u00e9").encode("cp1252"), "cp1252"),
    ],
    ids=["utf8-bom", "utf16-bom", "declared-cp1252"],
)
async def test_encodings_from_stdin(gateway: Gateway, data: bytes, encoding: str | None) -> None:
    args = ["estimate", "-", "-q", "when?", "--json", "--target", f"127.0.0.1:{gateway.port}"]
    if encoding:
        args += ["--encoding", encoding]
    r = await longread(*args, stdin=data)
    assert r.code == 0, r.err
    text = data.decode(encoding or ("utf-16" if data[:2] == b"\xff\xfe" else "utf-8-sig"))
    assert int(json.loads(r.out)["plan"]["chunks"][-1]["end"]) == len(text)


async def test_version_and_help() -> None:
    from importlib import metadata

    r = await longread("--version")
    assert r.code == 0 and r.out.strip() == f"longread {metadata.version('longread')}"
    r = await longread("analyze", "--help")
    assert r.code == 0 and "(default: localhost:50051)" in r.out and "(default: auto)" in r.out


async def test_sandbox_forwards_its_flags() -> None:
    r = await longread("sandbox", "--help")
    assert r.code == 0, r.err
    assert "--fault-rate" in r.out
    # The emulator's own parser reports it (its usage line, then the error).
    r = await longread("sandbox", "--no-such-flag")
    assert r.code == 2 and "--no-such-flag" in r.err and "Traceback" not in r.err


async def test_progress_for_every_stage(gateway: Gateway) -> None:
    doc = " ".join(f"Sentence {i} says the plant was delayed by the flood." for i in range(400))
    args = ["analyze", "-", "-q", "Why was it delayed?", "--progress", "--cache", "bypass"]
    args += ["--strategy", "map_reduce", "--chunk-tokens", "300"]
    r = await longread(*args, "--target", f"127.0.0.1:{gateway.port}", stdin=doc.encode())
    assert r.code == 0, r.err
    assert "map      [" in r.err and "reduce   [" in r.err, r.err


async def test_tls_on_every_client_command(sandbox: Sandbox, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    gw = await start(gateway_config(sandbox, tls=mutual_tls(certs)))
    try:
        target = ("--target", f"localhost:{gw.port}")
        mtls = ["--ca", str(certs["ca.pem"]), "--cert", str(certs["client.pem"])]
        mtls += ["--key", str(certs["client.key"])]
        r = await longread("health", *target, *mtls)
        assert (r.code, r.out.strip()) == (0, "SERVING"), r.err
        for cmd in ("estimate", "analyze"):
            r = await longread(cmd, "-", "-q", "When?", "--json", *target, *mtls, stdin=b"x")
            assert r.code == 0, r.err
        # Without the client certificate the handshake fails: one line, exit 1.
        r = await longread("health", *target, "--ca", str(certs["ca.pem"]))
        one_error_line(r, 1)
    finally:
        await gw.stop(0.5)
