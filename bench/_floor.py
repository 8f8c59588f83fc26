"""The yardstick: a bare grpc.aio server with our service and message sizes, and nothing else.

``python -m bench._floor --port P [--upstream URL] [--response FILE]``

* With ``--upstream`` (an OpenAI-compatible base URL, the sandbox's ``.../v1``) it is the floor
  of a gateway: "grpc echo + HTTP hop". Analyze builds the Chat Completions body from the
  request (one ``json.dumps``), POSTs it over a pooled keep-alive HTTP/1.1 connection, reads the
  answer with ``json.loads`` and returns an AnalyzeResponse. Stream relays the upstream's SSE
  stream as Delta events, then the result. ``--http raw`` (default) is a minimal HTTP/1.1
  client on asyncio streams, the least an HTTP hop can cost in Python; ``--http httpx`` uses
  httpx with the gateway's pool limits, which tells how much of the gap is the HTTP client;
  ``--http vendor`` makes the hop through the gateway's own vendor layer (the OpenAI adapter
  over ``UpstreamHttp`` and ``LeanTransport``: the payload built, sent, and the answer parsed
  into events exactly as the gateway does), which tells how much of the gap is that layer and
  how much the gateway's mechanisms above it (planning, cache, single-flight, limits, budget,
  breaker, retries, timeouts, telemetry).
* Without it, Analyze is a pure echo that returns a ready AnalyzeResponse: the floor of a cache
  hit.

``--response`` is a serialized AnalyzeResponse (what the gateway returned for the benchmark's
request), used as the template so the floor sends a message of the same size and shape.
The loop and server options are the gateway's (the event loop ``server.event_loop`` picks,
``--event-loop``, "auto" by default as there; the same message limits; start-up's objects
frozen out of the garbage collector and its thresholds set as ``longread serve`` sets them,
``--gc-thresholds``, the gateway's default unless given, empty for Python's own), so the
difference to the gateway is the gateway's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb
from longread_server.app import loop_factory, prepare_gc
from longread_server.config import EVENT_LOOPS, ServerConfig
from longread_server.domain import Finish, LlmRequest, Message, TextDelta, VendorKind
from longread_server.vendors import VendorAdapter, make_adapter
from longread_server.vendors.transport import UpstreamHttp, upstream_client

SYSTEM = "You analyse documents. Answer only from the text you are given, precisely and concisely."


def streamed_chat_body(model: str, text: str, question: str) -> bytes:
    """The gateway's single-pass request shape (plan/prompts.py), streamed: what the
    benchmarks send straight to the sandbox and through peer gateways."""
    return json.dumps(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"<document>\n{text}\n</document>"},
                {"role": "user", "content": f"Question: {question}"},
            ],
            "max_completion_tokens": 2048,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        separators=(",", ":"),
    ).encode()


def default_response() -> svc.AnalyzeResponse:
    model = pb.ResolvedModel(
        vendor="openai", model="gpt-4.1-mini", context_window=1047576, max_output_tokens=32768
    )
    return svc.AnalyzeResponse(
        text="The harbour closes at nine.",
        plan=pb.Plan(
            strategy=pb.STRATEGY_SINGLE_PASS, model=model, document_tokens=20, fits_single_pass=True
        ),
        usage=pb.Usage(input_tokens=60, output_tokens=7, calls=1),
        cost=pb.Cost(input_usd=0.000024, output_usd=0.0000112, total_usd=0.0000352),
        cache_status=pb.CACHE_STATUS_MISS,
        model=model,
        finish_reason="stop",
    )


class RawHttp:
    """The least an HTTP/1.1 POST costs on asyncio: a pool of keep-alive connections, the
    request written in one go, the response read by Content-Length or chunked framing."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        u = urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        fields = {"authorization": "Bearer bench", **(headers or {})}
        self.head = (
            f"POST {u.path} HTTP/1.1\r\nhost: {u.netloc}\r\ncontent-type: application/json\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        ).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _conn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        return await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def _send(self, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        reused = bool(self.idle)
        reader, writer = await self._conn()
        request = self.head + b"content-length: %d\r\n\r\n" % len(body) + body
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            # An idle connection the server closed meanwhile (Node and uvicorn close idle
            # keep-alive connections after a few seconds): once more on a new one.
            if not reused:
                raise
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        chunked = b"transfer-encoding: chunked" in lower
        return reader, writer, chunked

    @staticmethod
    def _length(head: bytes) -> int:
        i = head.find(b"content-length:")
        return int(head[i + 15 : head.index(b"\r\n", i)])

    async def post(self, body: bytes) -> bytes:
        reader, writer = await self._conn()
        writer.write(self.head + b"content-length: %d\r\n\r\n" % len(body) + body)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        data = await reader.readexactly(self._length(head))
        self.idle.append((reader, writer))
        return data

    async def stream(self, body: bytes) -> AsyncIterator[bytes]:
        """The body's chunks of a chunked response, as they arrive."""
        reader, writer, chunked = await self._send(body)
        assert chunked, "expected a chunked (SSE) response"
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            yield (await reader.readexactly(size + 2))[:-2]
        self.idle.append((reader, writer))

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


class FloorServicer(svc_grpc.AnalysisServiceServicer):
    def __init__(
        self, template: svc.AnalyzeResponse, upstream: str | None, client: str = "raw"
    ) -> None:
        self.template = template
        self.upstream = upstream.rstrip("/") + "/chat/completions" if upstream else None
        self.raw = RawHttp(self.upstream) if self.upstream and client == "raw" else None
        self.vendor: VendorAdapter | None = None
        self.vendor_http: UpstreamHttp | None = None
        if upstream and client == "vendor":
            self.vendor_http = UpstreamHttp(upstream_client())
            self.vendor = make_adapter(
                VendorKind.OPENAI,
                self.vendor_http,
                name="openai",
                base_url=upstream,
                api_key="bench",
            )
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            timeout=httpx.Timeout(600.0, connect=10.0),
        )
        self.headers = {"content-type": "application/json", "authorization": "Bearer bench"}

    async def _post(self, body: bytes) -> bytes:
        assert self.upstream is not None
        if self.raw is not None:
            return await self.raw.post(body)
        r = await self.http.post(self.upstream, content=body, headers=self.headers)
        return r.content

    async def _sse_lines(self, body: bytes) -> AsyncIterator[str]:
        assert self.upstream is not None
        if self.raw is not None:
            buf = b""
            async for chunk in self.raw.stream(body):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw_line in lines:
                    yield raw_line.decode()
            return
        async with self.http.stream("POST", self.upstream, content=body, headers=self.headers) as r:
            async for line in r.aiter_lines():
                yield line

    def _body(self, request: Any, stream: bool) -> bytes:
        # The gateway's single-pass shape: the document, then the question (plan/prompts.py).
        document = f"<document>\n{request.document.text}\n</document>"
        payload: dict[str, Any] = {
            "model": request.model.model or "gpt-4.1-mini",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": document},
                {"role": "user", "content": f"Question: {request.instruction}"},
            ],
            "max_completion_tokens": 2048,
        }
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def _llm_request(self, request: Any, stream: bool) -> LlmRequest:
        # The same messages as ``_body``, as the gateway's runner hands them to the adapter.
        return LlmRequest(
            model=request.model.model or "gpt-4.1-mini",
            system=SYSTEM,
            messages=(
                Message("user", f"<document>\n{request.document.text}\n</document>"),
                Message("user", f"Question: {request.instruction}"),
            ),
            max_output_tokens=2048,
            stream=stream,
        )

    async def Estimate(
        self, request: svc.EstimateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> svc.EstimateResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the floor only answers Analyze")

    async def Analyze(
        self, request: svc.AnalyzeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> svc.AnalyzeResponse:
        if self.upstream is None:
            return self.template
        if self.vendor is not None:
            out = svc.AnalyzeResponse()
            out.CopyFrom(self.template)
            parts = []
            async for event in self.vendor.call(self._llm_request(request, False)):
                if type(event) is TextDelta:
                    parts.append(event.text)
                elif type(event) is Finish:
                    out.usage.input_tokens = event.usage.input_tokens
                    out.usage.output_tokens = event.usage.output_tokens
            out.text = "".join(parts)
            return out
        obj = json.loads(await self._post(self._body(request, False)))
        out = svc.AnalyzeResponse()
        out.CopyFrom(self.template)
        out.text = obj["choices"][0]["message"]["content"]
        usage = obj.get("usage") or {}
        out.usage.input_tokens = usage.get("prompt_tokens", 0)
        out.usage.output_tokens = usage.get("completion_tokens", 0)
        return out

    async def Stream(
        self, request: svc.StreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[svc.StreamResponse]:
        text = []
        if self.upstream is None:
            for word in self.template.text.split(" "):
                yield svc.StreamResponse(delta=svc.Delta(stage=pb.STAGE_SINGLE, text=word))
        elif self.vendor is not None:
            async for event in self.vendor.call(self._llm_request(request, True)):
                if type(event) is TextDelta:
                    text.append(event.text)
                    yield svc.StreamResponse(
                        delta=svc.Delta(stage=pb.STAGE_SINGLE, text=event.text)
                    )
        else:
            async for line in self._sse_lines(self._body(request, True)):
                if not line.startswith("data: ") or line.startswith("data: [DONE]"):
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or ():
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        text.append(delta)
                        yield svc.StreamResponse(delta=svc.Delta(stage=pb.STAGE_SINGLE, text=delta))
        result = svc.AnalyzeResponse()
        result.CopyFrom(self.template)
        if text:
            result.text = "".join(text)
        yield svc.StreamResponse(result=result)


async def serve(
    port: int,
    template: svc.AnalyzeResponse,
    upstream: str | None,
    client: str,
    gc_thresholds: list[int],
) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    servicer = FloorServicer(template, upstream, client)
    svc_grpc.add_AnalysisServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    prepare_gc(gc_thresholds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)
    await servicer.http.aclose()
    if servicer.vendor_http is not None:
        await servicer.vendor_http.aclose()
    if servicer.raw is not None:
        await servicer.raw.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default=None, help="OpenAI-compatible base URL (.../v1)")
    parser.add_argument("--response", default=None, help="serialized AnalyzeResponse template")
    parser.add_argument(
        "--http", choices=("raw", "httpx", "vendor"), default="raw", help="HTTP client"
    )
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto")
    parser.add_argument(
        "--gc-thresholds",
        default=",".join(str(t) for t in ServerConfig().gc_thresholds),
        help="the garbage collector's, comma-separated (server.gc_thresholds); empty: Python's",
    )
    args = parser.parse_args()
    thresholds = [int(t) for t in args.gc_thresholds.split(",") if t.strip()]
    template = default_response()
    if args.response:
        template = svc.AnalyzeResponse.FromString(Path(args.response).read_bytes())
    with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
        runner.run(serve(args.port, template, args.upstream, args.http, thresholds))


if __name__ == "__main__":
    main()
