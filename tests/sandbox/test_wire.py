"""Wire-level behaviour the SDKs hide: exact SSE framing, headers, validation, HTTP/1.1."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import h11
import httpx
from longread_sandbox import Sandbox, SandboxConfig

from .documents import ANSWER, PROMPT

OPENAI_HEADERS = {"authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
MESSAGES = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": PROMPT}],
}
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?(ms|s)$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """``(event, data)`` pairs of an SSE body; strict about the framing."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        name = None
        if lines[0].startswith("event: "):
            name = lines.pop(0)[len("event: ") :]
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        events.append((name, lines[0][len("data: ") :]))
    return events


async def test_openai_sse_framing(http: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post("/v1/chat/completions", json=body, headers=OPENAI_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response.text)
    assert all(name is None for name, _ in events)  # OpenAI never sends event: lines
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == ANSWER


async def test_anthropic_sse_framing(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/messages", json={**MESSAGES, "stream": True}, headers=ANTHROPIC_HEADERS
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    for name, data in events:
        assert json.loads(data)["type"] == name  # the same type inside the JSON
    start = json.loads(events[0][1])["message"]
    assert start["usage"]["output_tokens"] == 1 and start["content"] == []
    delta = json.loads(events[-2][1])
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    usage = delta["usage"]  # cumulative: input and cache counts ride along
    assert usage["input_tokens"] == start["usage"]["input_tokens"] and usage["output_tokens"] > 1
    text = "".join(json.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == ANSWER


async def test_midstream_error_events(http: httpx.AsyncClient) -> None:
    fault = {"x-sandbox-fault": "midstream_error"}
    response = await http.post(
        "/v1/messages", json={**MESSAGES, "stream": True}, headers=ANTHROPIC_HEADERS | fault
    )
    name, data = sse_events(response.text)[-1]
    assert response.status_code == 200 and name == "error"
    assert json.loads(data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    response = await http.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=OPENAI_HEADERS | fault
    )
    name, data = sse_events(response.text)[-1]
    assert response.status_code == 200 and name is None
    assert json.loads(data)["error"]["type"] == "server_error"


async def test_echoing_faults_quote_the_prompt(http: httpx.AsyncClient) -> None:
    quote = PROMPT[:40]
    echo = {"x-sandbox-fault": "echo_400"}
    response = await http.post("/v1/chat/completions", json=CHAT, headers=OPENAI_HEADERS | echo)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid_prompt"
    assert quote in error["message"]
    page = {"x-sandbox-fault": "html_502"}
    response = await http.post("/v1/messages", json=MESSAGES, headers=ANTHROPIC_HEADERS | page)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in response.text
    mid = {"x-sandbox-fault": "midstream_echo"}
    response = await http.post(
        "/v1/messages", json={**MESSAGES, "stream": True}, headers=ANTHROPIC_HEADERS | mid
    )
    name, data = sse_events(response.text)[-1]
    assert response.status_code == 200 and name == "error"
    assert quote in json.loads(data)["error"]["message"]
    response = await http.post("/v1/chat/completions", json=CHAT, headers=OPENAI_HEADERS | mid)
    assert response.status_code == 500 and quote in response.json()["error"]["message"]


async def test_rate_limit_and_id_headers(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=CHAT, headers=OPENAI_HEADERS)
    headers = response.headers
    assert headers["x-request-id"].startswith("req_")
    assert int(headers["x-ratelimit-remaining-requests"]) < int(
        headers["x-ratelimit-limit-requests"]
    )
    assert int(headers["x-ratelimit-remaining-tokens"]) < int(headers["x-ratelimit-limit-tokens"])
    assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
    assert GO_DURATION.match(headers["x-ratelimit-reset-tokens"])
    assert int(headers["content-length"]) == len(response.content)

    response = await http.post("/v1/messages", json=MESSAGES, headers=ANTHROPIC_HEADERS)
    headers = response.headers
    assert headers["request-id"].startswith("req_")
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert int(headers[f"anthropic-ratelimit-{kind}-limit"]) > 0
        assert int(headers[f"anthropic-ratelimit-{kind}-remaining"]) >= 0
        assert RFC3339.match(headers[f"anthropic-ratelimit-{kind}-reset"])
    assert int(headers["anthropic-ratelimit-tokens-remaining"]) % 1000 == 0


async def test_429_reports_exhausted_limits_and_retry_hints(http: httpx.AsyncClient) -> None:
    headers = OPENAI_HEADERS | {"x-sandbox-fault": "429", "x-sandbox-retry-after-ms": "2500"}
    response = await http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "2500"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "2.5s"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_openai_validation_errors(http: httpx.AsyncClient) -> None:
    async def post(body: Any, **headers: str) -> httpx.Response:
        return await http.post(
            "/v1/chat/completions", content=json.dumps(body), headers=OPENAI_HEADERS | headers
        )

    missing_model = await post({"messages": CHAT["messages"]})
    assert missing_model.status_code == 400
    assert missing_model.json() == {
        "error": {
            "message": "you must provide a model parameter",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    missing_messages = (await post({"model": "gpt-4o-mini"})).json()["error"]
    assert missing_messages["param"] == "messages"
    assert missing_messages["code"] == "missing_required_parameter"
    bad_role = await post({"model": "m", "messages": [{"role": "robot", "content": "x"}]})
    assert bad_role.json()["error"]["param"] == "messages[0].role"
    options_without_stream = await post({**CHAT, "stream_options": {"include_usage": True}})
    assert options_without_stream.status_code == 400
    bad_json = await http.post("/v1/chat/completions", content=b"{nope", headers=OPENAI_HEADERS)
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    no_key = await http.post("/v1/chat/completions", json=CHAT)
    assert no_key.status_code == 401
    wrong_path = await http.get("/v1/chat/completion", headers=OPENAI_HEADERS)
    assert wrong_path.status_code == 404
    assert wrong_path.json()["error"]["message"] == "Invalid URL (GET /v1/chat/completion)"
    wrong_method = await http.get("/v1/chat/completions", headers=OPENAI_HEADERS)
    assert wrong_method.status_code == 404
    for response in (missing_model, bad_json, no_key, wrong_path):
        assert response.headers["x-request-id"].startswith("req_")


async def test_anthropic_validation_errors(http: httpx.AsyncClient) -> None:
    def error_of(response: httpx.Response) -> dict[str, Any]:
        body = response.json()
        assert body["type"] == "error" and body["request_id"] == response.headers["request-id"]
        error: dict[str, Any] = body["error"]
        return error

    no_max = await http.post(
        "/v1/messages",
        json={k: v for k, v in MESSAGES.items() if k != "max_tokens"},
        headers=ANTHROPIC_HEADERS,
    )
    assert no_max.status_code == 400
    assert error_of(no_max) == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    no_model = await http.post(
        "/v1/messages", json={**MESSAGES, "model": None}, headers=ANTHROPIC_HEADERS
    )
    assert error_of(no_model)["message"] == "model: Field required"
    no_version = await http.post("/v1/messages", json=MESSAGES, headers={"x-api-key": "k"})
    assert no_version.status_code == 400 and "anthropic-version" in error_of(no_version)["message"]
    no_key = await http.post(
        "/v1/messages", json=MESSAGES, headers={"anthropic-version": "2023-06-01"}
    )
    assert no_key.status_code == 401 and error_of(no_key)["type"] == "authentication_error"
    bad_json = await http.post("/v1/messages", content=b"[", headers=ANTHROPIC_HEADERS)
    assert bad_json.status_code == 400
    wrong_path = await http.post("/v1/messages/nope", json=MESSAGES, headers=ANTHROPIC_HEADERS)
    assert wrong_path.status_code == 404 and error_of(wrong_path)["type"] == "not_found_error"
    too_many_marks = {
        **MESSAGES,
        "system": [
            {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
            for i in range(5)
        ],
    }
    rejected = await http.post("/v1/messages", json=too_many_marks, headers=ANTHROPIC_HEADERS)
    assert rejected.status_code == 400 and "maximum of 4" in error_of(rejected)["message"]


async def test_keep_alive_and_pipelining(sandbox: Sandbox) -> None:
    """Three requests written at once on one connection get three answers, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port)
    client = h11.Connection(h11.CLIENT)
    bodies = [
        json.dumps({**CHAT, "messages": [{"role": "user", "content": f"{PROMPT} {i}"}]}).encode()
        for i in range(3)
    ]
    wire = b""
    for body in bodies:
        request = h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[
                ("host", "sandbox"),
                ("authorization", "Bearer k"),
                ("content-length", str(len(body))),
            ],
        )
        wire += (client.send(request) or b"") + (client.send(h11.Data(data=body)) or b"")
        wire += client.send(h11.EndOfMessage()) or b""
        # h11 clients do not pipeline; pretend each response arrived to write the next.
        client = h11.Connection(h11.CLIENT)
    writer.write(wire)
    await writer.drain()
    parser = h11.Connection(h11.CLIENT)
    ids = []
    for _ in bodies:
        parser.send(
            h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
        )
        parser.send(h11.EndOfMessage())
        status, payload = 0, b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                payload += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert status == 200
        ids.append(json.loads(payload)["id"])
        parser.start_next_cycle()
    assert len(set(ids)) == 3
    writer.close()
    await writer.wait_closed()
    assert sandbox.stats.requests == 3


async def test_malformed_http_gets_400(sandbox: Sandbox) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    assert response.startswith(b"HTTP/1.1 400 ")
    writer.close()
    await writer.wait_closed()


async def test_body_limit_gives_413() -> None:
    body = {**MESSAGES, "messages": [{"role": "user", "content": "x" * 2000}]}
    async with (
        Sandbox(SandboxConfig(max_body_bytes=1000)) as sb,
        httpx.AsyncClient(base_url=sb.base_url) as http,
    ):
        response = await http.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


async def test_count_tokens_and_models(http: httpx.AsyncClient) -> None:
    counted = await http.post(
        "/v1/messages/count_tokens",
        json={"model": "claude-sonnet-4-6", "messages": MESSAGES["messages"]},
        headers=ANTHROPIC_HEADERS,
    )
    assert counted.status_code == 200 and set(counted.json()) == {"input_tokens"}
    listed = await http.get("/v1/models", headers=ANTHROPIC_HEADERS)
    assert listed.json()["data"][0]["type"] == "model"  # Anthropic's shape for Anthropic clients
    listed = await http.get("/v1/models", headers=OPENAI_HEADERS)
    assert listed.json()["object"] == "list"
