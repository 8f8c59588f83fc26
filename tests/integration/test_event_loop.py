"""``longread serve`` on either event loop (``server.event_loop``): uvloop by default where it is
installed, asyncio's own when asked; the same RPCs answered the same on both, with start-up's
objects frozen out of garbage collection and the collector's thresholds set
(``server.gc_thresholds``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from longread.v1 import types_pb2 as pb
from longread_sandbox import Sandbox

from tests.replicas import serve_replicas

DOC = "The harbour closes at nine. " * 40 + "Ferries leave hourly from the stone quay."
QUESTION = "When does the harbour close?"


@pytest.mark.parametrize(
    ("choice", "loop", "thresholds", "applied"),
    [
        ("auto", "uvloop", "", "(50000, 10, 10)"),  # the default
        ("asyncio", "asyncio", "gc_thresholds = [1234, 7, 3]", "(1234, 7, 3)"),
    ],
)
async def test_serve_answers_on_the_event_loop_it_names(
    tmp_path: Path, sandbox: Sandbox, choice: str, loop: str, thresholds: str, applied: str
) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        f"""
listen = "127.0.0.1:0"
[server]
grace_s = 0.5
event_loop = "{choice}"
{thresholds}
[telemetry]
log_level = "DEBUG"
[sandbox]
enabled = false
[[upstreams]]
name = "openai"
kind = "openai"
base_url = "{sandbox.base_url}/v1"
api_key_env = "TEST_SANDBOX_KEY"
"""
    )
    log = tmp_path / "serve.log"
    async with serve_replicas(config, 1, log) as (replica,), replica.client() as client:
        answer = await client.analyze(DOC + f" ({choice})", QUESTION)
        events = [ev async for ev in client.stream(DOC + f" ({choice}, streamed)", QUESTION)]
    assert "nine" in answer.text
    assert events[0].HasField("plan") and events[-1].HasField("result")
    streamed = "".join(ev.delta.text for ev in events if ev.HasField("delta"))
    assert streamed == events[-1].result.text
    assert events[-1].result.cache_status == pb.CACHE_STATUS_MISS
    logged = log.read_text()
    assert f"(plaintext, {loop} event loop)" in logged
    # What start-up built is frozen out of garbage collection (modules, tokenizer tables...).
    frozen = re.search(r"(\d+) start-up objects left out of garbage collection", logged)
    assert frozen is not None and int(frozen.group(1)) > 10_000
    # As the interpreter reports them (gc.get_threshold) once set.
    assert f"garbage collection thresholds {applied}" in logged
