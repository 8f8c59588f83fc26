"""The AnalysisService's Connect face: Estimate, Analyze and Stream over HTTP, in the Connect
protocol (JSON or binary protobuf) and in gRPC-Web, served by connectrpc's ASGI application.

Like the gRPC servicer, it reads the request's headers and deadline (``connect-timeout-ms``,
or ``grpc-timeout`` for gRPC-Web) into a ``Call`` and delegates to the same
``rpcs.AnalysisRpcs``: the same API keys (``authorization: Bearer``), admission and drain,
conversion, span, metric and access log. A failure's ``ServiceError`` becomes a Connect error
with the code, message and google.rpc details a gRPC caller would get
(``ServiceError.to_connect_error``).

The library is ``connectrpc``, the Connect project's own Python implementation (it passes the
Connect conformance suite and serves Connect, gRPC and gRPC-Web from one ASGI application);
``connect-python`` is the same project's earlier name, no longer released since the rename.
Its stubs are generated for Google's protobuf messages (``protobuf=google``), the ones the
gRPC face uses, so both faces share ``convert.py``.

Request bodies are decoded by ``convert.decoder``, as on the gRPC face, so bytes (or JSON)
that are not a request, and requests over the size limit, reach ``rpcs.py`` and are answered
INVALID_ARGUMENT with details, not by the library without them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.message import Message
from longread.v1 import analysis_service_pb2 as svc
from longread.v1.analysis_service_connect import AnalysisServiceASGIApplication

from longread_server.api.convert import Undecodable, decoder
from longread_server.api.errors import ServiceError
from longread_server.api.rpcs import AnalysisRpcs, Call

SYSTEM = "connect_rpc"  # rpc.system for Connect and gRPC-Web (OpenTelemetry's name)


class ConnectAnalysisService:
    """The generated ``AnalysisService`` protocol, over ``AnalysisRpcs``."""

    def __init__(self, rpcs: AnalysisRpcs) -> None:
        self._rpcs = rpcs

    async def estimate(
        self,
        request: svc.EstimateRequest,
        ctx: RequestContext[svc.EstimateRequest, svc.EstimateResponse],
        /,
    ) -> svc.EstimateResponse:
        try:
            return await self._rpcs.estimate(request, _call(ctx))
        except ServiceError as err:
            raise err.to_connect_error() from None

    async def analyze(
        self,
        request: svc.AnalyzeRequest,
        ctx: RequestContext[svc.AnalyzeRequest, svc.AnalyzeResponse],
        /,
    ) -> svc.AnalyzeResponse:
        try:
            return await self._rpcs.analyze(request, _call(ctx))
        except ServiceError as err:
            raise err.to_connect_error() from None

    async def stream(
        self,
        request: svc.StreamRequest,
        ctx: RequestContext[svc.StreamRequest, svc.StreamResponse],
        /,
    ) -> AsyncIterator[svc.StreamResponse]:
        try:
            async with contextlib.aclosing(self._rpcs.stream(request, _call(ctx))) as msgs:
                async for msg in msgs:
                    yield msg
        except ServiceError as err:
            raise err.to_connect_error() from None


def _call(ctx: RequestContext[Any, Any]) -> Call:
    def time_remaining() -> float | None:
        ms = ctx.timeout_ms
        return None if ms is None else ms / 1000

    return Call(ctx.request_headers.allitems(), time_remaining, SYSTEM)


class _Decoding:
    """A codec whose ``decode`` is ``convert.decoder``'s: it never raises, and hands an
    ``Undecodable`` to the handler in place of a request that is not one."""

    def __init__(self, inner: Codec[Any, Any], max_request_bytes: int, *, json: bool) -> None:
        self._inner = inner
        self._max = max_request_bytes
        self._json = json
        self._decoders: dict[type[Message], Any] = {}

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Message) -> bytes:
        if self._json:
            # One line per message (the library's default indents): compact on the wire,
            # and a Stream read with curl shows one event per line.
            return json_format.MessageToJson(message, indent=None).encode()
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Any:
        decode = self._decoders.get(message_class)
        if decode is None:
            decode = decoder(message_class, self._max, json=self._json)
            self._decoders[message_class] = decode
        result: Message | Undecodable = decode(bytes(data))
        return result


def connect_app(rpcs: AnalysisRpcs, max_request_bytes: int) -> AnalysisServiceASGIApplication:
    """The AnalysisService as an ASGI application (Connect, gRPC-Web; JSON and binary). As on
    the gRPC face, bodies up to twice the limit are read, so that the ones over it are
    refused with the limit named; above that the library refuses them (RESOURCE_EXHAUSTED)."""
    codecs: list[Codec[Any, Any]] = [
        _Decoding(google_protobuf_binary_codec(), max_request_bytes, json=False),
        _Decoding(google_protobuf_json_codec(), max_request_bytes, json=True),
    ]
    return AnalysisServiceASGIApplication(
        ConnectAnalysisService(rpcs), read_max_bytes=2 * max_request_bytes, codecs=codecs
    )
