"""The ``/_sandbox/`` control plane and fault selection, as a chaos test would drive them."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
from longread_sandbox import Sandbox

from .documents import PROMPT

HEADERS = {"authorization": "Bearer sk-test"}


def chat(text: str = PROMPT) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


async def statuses(http: httpx.AsyncClient, count: int, text: str = PROMPT) -> list[int]:
    return [
        (await http.post("/v1/chat/completions", json=chat(text), headers=HEADERS)).status_code
        for _ in range(count)
    ]


async def test_config_script_and_stats_over_http(http: httpx.AsyncClient) -> None:
    config = await http.post("/_sandbox/config", json={"script": ["429", None, "500"]})
    assert config.status_code == 200 and config.json()["script"] == ["429", None, "500"]
    tagged = HEADERS | {"x-sandbox-tag": "case-1"}
    codes = [
        (await http.post("/v1/chat/completions", json=chat(), headers=tagged)).status_code
        for _ in range(4)
    ]
    assert codes == [429, 200, 500, 200]
    stats = (await http.get("/_sandbox/stats")).json()
    assert stats["requests"] == 4
    assert stats["by_endpoint"] == {"/v1/chat/completions": 4}
    assert stats["by_model"] == {"gpt-4o-mini": 4}
    assert stats["by_status"] == {"429": 1, "200": 2, "500": 1}
    assert stats["by_fault"] == {"429": 1, "500": 1}
    assert stats["by_tag"] == {"case-1": 4}
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert (await http.post("/_sandbox/reset")).json() == {"ok": True}
    assert (await http.get("/_sandbox/stats")).json()["requests"] == 0


async def test_invalid_config_is_rejected(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    for bad in ({"fault_rate": 2}, {"nope": 1}, {"fault_kind": "explode"}, {"script": "429"}):
        response = await http.post("/_sandbox/config", json=bad)
        assert response.status_code == 400, bad
    assert sandbox.config.fault_rate == 0
    unknown = await http.post(
        "/v1/chat/completions", json=chat(), headers=HEADERS | {"x-sandbox-fault": "explode"}
    )
    assert unknown.status_code == 400


async def test_fault_rate_is_seeded_and_reproducible(
    http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    sandbox.configure(fault_rate=0.5, fault_kind="503", seed=7)
    first = await statuses(http, 20)
    sandbox.reset()
    second = await statuses(http, 20)
    assert first == second
    assert set(first) == {200, 503}


async def test_prompt_marker_targets_one_request(http: httpx.AsyncClient) -> None:
    marked = PROMPT + "\n\n[[sandbox-fault:503]]"
    assert await statuses(http, 2, marked) == [503, 503]
    assert await statuses(http, 1) == [200]
    counted = PROMPT + " [[sandbox-fault:429*2]]"
    assert await statuses(http, 4, counted) == [429, 429, 200, 200]


async def test_marker_text_is_not_quoted_in_answers(http: httpx.AsyncClient) -> None:
    text = "The vault code is 4711. [[sandbox-fault:ok]]\n\nWhat is the vault code?"
    response = await http.post("/v1/chat/completions", json=chat(text), headers=HEADERS)
    content = response.json()["choices"][0]["message"]["content"]
    assert "4711" in content and "sandbox-fault" not in content


async def test_latency_header_and_config_apply(http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    # Tiny values keep this fast; what matters is that they parse and requests still succeed.
    headers = HEADERS | {"x-sandbox-latency-ms": "1", "x-sandbox-ttft-ms": "1"}
    body = {**chat(), "stream": True}
    response = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    sandbox.configure(tokens_per_s=1_000_000.0)
    response = await http.post("/v1/chat/completions", json=body, headers=HEADERS)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    bad = await http.post(
        "/v1/chat/completions", json=chat(), headers=HEADERS | {"x-sandbox-latency-ms": "-1"}
    )
    assert bad.status_code == 400


async def test_latency_runs_from_arrival_for_answers_and_faults(http: httpx.AsyncClient) -> None:
    # The answer is worked out during the latency, not after it; either way no answer or
    # injected error comes back sooner than the latency asked for.
    slow = HEADERS | {"x-sandbox-latency-ms": "120"}
    for extra in ({}, {"x-sandbox-fault": "500"}):
        started = asyncio.get_running_loop().time()
        response = await http.post("/v1/chat/completions", json=chat(), headers=slow | extra)
        elapsed = asyncio.get_running_loop().time() - started
        assert response.status_code == (500 if extra else 200)
        assert elapsed >= 0.12


@pytest.mark.parametrize(
    "command", [["longread_sandbox"], ["longread.cli", "sandbox"]], ids=["module", "longread"]
)
async def test_cli_serves_until_terminated(command: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *command,
        "--port",
        "0",
        "--script",
        "429,ok",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = (await process.stdout.readline()).decode()
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as http:
            assert await statuses(http, 3) == [429, 200, 200]
        process.terminate()
        assert await process.wait() == 0
