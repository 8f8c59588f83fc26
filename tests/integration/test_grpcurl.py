"""grpcurl (a third-party gRPC CLI) works against the server through reflection alone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from longread_server.app import Gateway

TOOLS = Path(__file__).resolve().parents[2] / ".tools"


async def _grpcurl(*args: str) -> tuple[int, str, str]:
    tools = TOOLS
    exe = shutil.which("grpcurl", path=f"{tools}:{os.environ.get('PATH', '')}")
    assert exe, "grpcurl not on PATH: `make tools` installs it into .tools/"
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_list_describe_and_call(gateway: Gateway) -> None:
    target = f"127.0.0.1:{gateway.port}"
    rc, out, err = await _grpcurl("-plaintext", target, "list")
    assert rc == 0, err
    assert "longread.v1.AnalysisService" in out.split()
    rc, out, err = await _grpcurl("-plaintext", target, "describe", "longread.v1.AnalysisService")
    assert rc == 0 and "rpc Stream" in out, err
    body = json.dumps(
        {"document": {"text": "Tides rise twice a day."}, "instruction": "How often do tides rise?"}
    )
    rc, out, err = await _grpcurl(
        "-plaintext", "-d", body, target, "longread.v1.AnalysisService/Estimate"
    )
    assert rc == 0, err
    assert int(json.loads(out)["plan"]["document_tokens"]) > 0, out


async def test_ghz_resolves_methods_through_reflection(gateway: Gateway) -> None:
    """ghz asks reflection for the *method* symbol (Python's reflection alone cannot
    answer that); a short load run of Estimate must succeed without any .proto file."""
    ghz = shutil.which("ghz", path=f"{TOOLS}:{os.environ.get('PATH', '')}")
    assert ghz, "ghz not on PATH: `make clients-tools` installs it into .tools/"
    body = json.dumps({"document": {"text": "Tides rise twice a day."}, "instruction": "How?"})
    proc = await asyncio.create_subprocess_exec(
        ghz,
        "--insecure",
        "--call",
        "longread.v1.AnalysisService.Estimate",
        "-d",
        body,
        "--total",
        "50",
        "--concurrency",
        "4",
        "--format",
        "json",
        f"127.0.0.1:{gateway.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["count"] == 50 and report["statusCodeDistribution"] == {"OK": 50}
