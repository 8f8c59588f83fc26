"""Fixtures for the sandbox contract tests: one in-process sandbox, official SDK clients.

The sandbox runs on a real loopback socket for the whole session; each test starts from zeroed
counters and default knobs, so tests can assert exact request counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio
from longread_sandbox import Sandbox, SandboxConfig

# A retry hint small enough that SDK retries in tests take milliseconds.
TEST_RETRY_AFTER_MS = 10.0
DEFAULT_KNOBS = {
    "latency_ms": 0.0,
    "ttft_ms": 0.0,
    "tokens_per_s": 0.0,
    "fault_rate": 0.0,
    "fault_kind": "503",
    "seed": 0,
    "script": [],
    "retry_after_ms": TEST_RETRY_AFTER_MS,
    "hang_max_s": 10.0,
    "delta_tokens": 4,
    "api_key": None,
}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    sb = Sandbox(SandboxConfig(retry_after_ms=TEST_RETRY_AFTER_MS, hang_max_s=10.0))
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture(autouse=True)
def fresh_sandbox(sandbox: Sandbox) -> Sandbox:
    """Zero counters, scripts and caches, and restore default knobs before every test."""
    sandbox.configure(**DEFAULT_KNOBS)
    sandbox.reset()
    return sandbox


@pytest_asyncio.fixture
async def oai(sandbox: Sandbox) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="sk-test", max_retries=0)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def claude(sandbox: Sandbox) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=sandbox.base_url, api_key="sk-ant-test", max_retries=0
    )
    yield client
    await client.close()


@pytest_asyncio.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client, for what the SDKs will not send (bad bodies, missing headers)."""
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        yield client
