"""A small typed client over the generated stubs, sync (``Client``) and async (``AsyncClient``).

Keyword options map onto the request messages; anything not covered can be set on a request
built with ``build_request`` and passed as ``request=``. Errors surface as ``grpc.RpcError``;
``error_details`` decodes the google.rpc details (field violations, retry delay) they carry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import propagate

from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb

DEFAULT_TARGET = "localhost:50051"
# Above a default server's refusal ceiling (twice its request limit), so an oversized request
# gets the server's answer, which names the limit, rather than a bare local RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # gRPC keeps a request for a retry only up to this size (256 KiB by default): above it
    # the call is committed and a long document would never be retried.
    ("grpc.per_rpc_retry_buffer_size", MAX_MESSAGE_BYTES),
]
# The channel's default service config (used unless the name resolver returns one):
# round_robin over every address the name resolves to (``dns:///gateway.example:50051``), so
# calls spread over the replicas, and a retry of UNAVAILABLE (a replica gone, draining or
# refusing), which gRPC makes only while nothing of the response has been received: an
# Estimate or Analyze that got no answer, a Stream before its first message. The gateway
# closes connections after ``server.max_connection_age_s``, and each reconnection resolves
# the name again, picking up new replicas. ``retryThrottling`` stops retrying when most
# calls fail, so that an outage is not multiplied.
DEFAULT_SERVICE_CONFIG: Mapping[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "longread.v1.AnalysisService"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}
_STRATEGIES = {
    "auto": pb.STRATEGY_UNSPECIFIED,
    "single_pass": pb.STRATEGY_SINGLE_PASS,
    "map_reduce": pb.STRATEGY_MAP_REDUCE,
    "refine": pb.STRATEGY_REFINE,
    "select": pb.STRATEGY_SELECT,
}
_CACHE = {
    "default": pb.CACHE_MODE_UNSPECIFIED,
    "bypass": pb.CACHE_MODE_BYPASS,
    "no_store": pb.CACHE_MODE_NO_STORE,
    "only_if_cached": pb.CACHE_MODE_ONLY_IF_CACHED,
}
_PREFERENCES = {
    "": pb.MODEL_PREFERENCE_UNSPECIFIED,
    "cheapest": pb.MODEL_PREFERENCE_CHEAPEST,
    "largest_context": pb.MODEL_PREFERENCE_LARGEST_CONTEXT,
}

R = TypeVar("R", svc.EstimateRequest, svc.AnalyzeRequest, svc.StreamRequest)


@dataclass(frozen=True)
class Options:
    """Request options shared by every RPC (unset values are left to the server)."""

    model: str = ""
    vendor: str = ""
    preference: str = ""  # "", "cheapest", "largest_context"
    system_prompt: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop: Sequence[str] = ()
    seed: int | None = None
    max_chunk_tokens: int = 0
    overlap_tokens: int = 0
    strategy: str = "auto"
    cache: str = "default"
    cache_ttl_s: float | None = None
    # Reuse of an answer to an earlier question that means the same (None: as the tenant is
    # configured), and the similarity it needs (0: the server's default).
    semantic: bool | None = None
    min_similarity: float = 0.0
    max_cost_usd: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    history: Sequence[tuple[str, str]] = ()  # (role, text), role "user" or "assistant"
    document_id: str = ""
    media_type: str = ""


def build_request(cls: type[R], text: str, instruction: str, opts: Options = Options()) -> R:
    """Builds an Estimate/Analyze/Stream request from plain values."""
    req = cls(
        document=pb.Document(text=text, id=opts.document_id, media_type=opts.media_type),
        instruction=instruction,
        model=pb.ModelSelection(
            vendor=opts.vendor, model=opts.model, preference=_PREFERENCES[opts.preference]
        ),
        chunking=pb.ChunkingOptions(
            max_chunk_tokens=opts.max_chunk_tokens,
            overlap_tokens=opts.overlap_tokens,
            strategy=_STRATEGIES[opts.strategy],
        ),
        budget=pb.Budget(max_cost_usd=opts.max_cost_usd),
    )
    g = req.generation
    g.system_prompt = opts.system_prompt
    g.stop.extend(opts.stop)
    if opts.temperature is not None:
        g.temperature = opts.temperature
    if opts.top_p is not None:
        g.top_p = opts.top_p
    if opts.max_output_tokens is not None:
        g.max_output_tokens = opts.max_output_tokens
    if opts.seed is not None:
        g.seed = opts.seed
    for role, turn_text in opts.history:
        role_pb = pb.ROLE_USER if role == "user" else pb.ROLE_ASSISTANT
        req.history.append(pb.Turn(role=role_pb, text=turn_text))
    if not isinstance(req, svc.EstimateRequest):
        req.cache.mode = _CACHE[opts.cache]
        if opts.cache_ttl_s is not None:
            d = duration_pb2.Duration()
            d.FromNanoseconds(round(opts.cache_ttl_s * 1e9))
            req.cache.ttl.CopyFrom(d)
        if opts.semantic is not None or opts.min_similarity:
            sem = req.cache.semantic
            if opts.semantic is not None:
                sem.mode = pb.SEMANTIC_MODE_ON if opts.semantic else pb.SEMANTIC_MODE_OFF
            sem.min_similarity = opts.min_similarity
        req.labels.update(opts.labels)
    return req


@dataclass(frozen=True)
class ErrorDetails:
    """The google.rpc details of a failed call, decoded."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: Sequence[tuple[str, str]] = ()
    retry_after_s: float | None = None
    quota_violations: Sequence[tuple[str, str]] = ()


def error_details(err: grpc.RpcError) -> ErrorDetails:
    """Decodes the rich status of ``err`` (works for sync and async errors)."""
    call: Any = err  # RpcError raised by a call is also a grpc.Call (sync) or AioRpcError
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    trailers: Sequence[tuple[str, str | bytes]] = tuple(call.trailing_metadata() or ())
    raw = next((v for k, v in trailers if k == "grpc-status-details-bin"), None)
    if raw is None:
        return ErrorDetails(code, message)
    status = status_pb2.Status.FromString(raw)
    out: dict[str, Any] = {}
    for any_msg in status.details:
        if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_msg.Unpack(info)
            out["reason"], out["domain"] = info.reason, info.domain
            out["metadata"] = dict(info.metadata)
        elif any_msg.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_msg.Unpack(br)
            out["field_violations"] = [(v.field, v.description) for v in br.field_violations]
        elif any_msg.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            any_msg.Unpack(ri)
            out["retry_after_s"] = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
        elif any_msg.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            qf = error_details_pb2.QuotaFailure()
            any_msg.Unpack(qf)
            out["quota_violations"] = [(v.subject, v.description) for v in qf.violations]
    return ErrorDetails(code, message, **out)


def _metadata(
    api_key: str | None, extra: Sequence[tuple[str, str]]
) -> tuple[tuple[str, str | bytes], ...]:
    md: list[tuple[str, str | bytes]] = list(extra)
    if api_key:
        md.append(("authorization", f"Bearer {api_key}"))
    return tuple(md)


def _with_trace(md: tuple[tuple[str, str | bytes], ...]) -> tuple[tuple[str, str | bytes], ...]:
    """Adds the caller's trace context as the configured propagators write it
    (``OTEL_PROPAGATORS``: ``traceparent``, ``tracestate`` and ``baggage`` by default), so
    the server's spans join the caller's trace. Unchanged when there is nothing to send."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return md
    return md + tuple(carrier.items())


def channel_options(
    service_config: Mapping[str, Any] | str | None = DEFAULT_SERVICE_CONFIG,
) -> list[tuple[str, Any]]:
    """The channel options the clients use: message sizes, and ``service_config`` (a mapping
    or its JSON) as the default service config; None: none (gRPC's pick_first, no retries)."""
    opts: list[tuple[str, Any]] = list(_OPTIONS)
    if service_config is not None:
        text = service_config if isinstance(service_config, str) else json.dumps(service_config)
        opts += [("grpc.service_config", text), ("grpc.enable_retries", 1)]
    else:
        opts.append(("grpc.enable_retries", 0))
    return opts


def _channel_credentials(
    root_certificates: bytes | None, cert_chain: bytes | None, private_key: bytes | None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates, private_key, cert_chain)


class Client:
    """Blocking client. ``timeout`` (seconds) becomes each call's gRPC deadline."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        secure: bool = False,
        root_certificates: bytes | None = None,
        cert_chain: bytes | None = None,
        private_key: bytes | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        service_config: Mapping[str, Any] | str | None = DEFAULT_SERVICE_CONFIG,
    ) -> None:
        opts = channel_options(service_config)
        if secure or root_certificates:
            creds = _channel_credentials(root_certificates, cert_chain, private_key)
            self._channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = svc_grpc.AnalysisServiceStub(self._channel)
        self._md = _metadata(api_key, metadata)
        self._timeout = timeout

    def _meta(self) -> tuple[tuple[str, str | bytes], ...]:
        return _with_trace(self._md)

    def estimate(
        self,
        text: str = "",
        instruction: str = "",
        *,
        options: Options = Options(),
        request: svc.EstimateRequest | None = None,
        timeout: float | None = None,
    ) -> svc.EstimateResponse:
        req = request or build_request(svc.EstimateRequest, text, instruction, options)
        return self._stub.Estimate(req, timeout=timeout or self._timeout, metadata=self._meta())

    def analyze(
        self,
        text: str = "",
        instruction: str = "",
        *,
        options: Options = Options(),
        request: svc.AnalyzeRequest | None = None,
        timeout: float | None = None,
    ) -> svc.AnalyzeResponse:
        req = request or build_request(svc.AnalyzeRequest, text, instruction, options)
        return self._stub.Analyze(req, timeout=timeout or self._timeout, metadata=self._meta())

    def stream(
        self,
        text: str = "",
        instruction: str = "",
        *,
        options: Options = Options(),
        request: svc.StreamRequest | None = None,
        timeout: float | None = None,
    ) -> Iterator[svc.StreamResponse]:
        req = request or build_request(svc.StreamRequest, text, instruction, options)
        call = self._stub.Stream(req, timeout=timeout or self._timeout, metadata=self._meta())
        try:
            yield from call
        finally:
            call.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client (grpc.aio). Use ``async with``."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        secure: bool = False,
        root_certificates: bytes | None = None,
        cert_chain: bytes | None = None,
        private_key: bytes | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        service_config: Mapping[str, Any] | str | None = DEFAULT_SERVICE_CONFIG,
    ) -> None:
        opts = channel_options(service_config)
        if secure or root_certificates:
            creds = _channel_credentials(root_certificates, cert_chain, private_key)
            self._channel = grpc.aio.secure_channel(target, creds, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        self._stub = svc_grpc.AnalysisServiceStub(self._channel)
        self._md = _metadata(api_key, metadata)
        self._timeout = timeout

    def _meta(self) -> tuple[tuple[str, str | bytes], ...]:
        return _with_trace(self._md)

    async def estimate(
        self,
        text: str = "",
        instruction: str = "",
        *,
        options: Options = Options(),
        request: svc.EstimateRequest | None = None,
        timeout: float | None = None,
    ) -> svc.EstimateResponse:
        req = request or build_request(svc.EstimateRequest, text, instruction, options)
        return await self._stub.Estimate(
            req, timeout=timeout or self._timeout, metadata=self._meta()
        )

    async def analyze(
        self,
        text: str = "",
        instruction: str = "",
        *,
        options: Options = Options(),
        request: svc.AnalyzeRequest | None = None,
        timeout: float | None = None,
    ) -> svc.AnalyzeResponse:
        req = request or build_request(svc.AnalyzeRequest, text, instruction, options)
        return await self._stub.Analyze(
            req, timeout=timeout or self._timeout, metadata=self._meta()
        )

    async def stream(
        self,
        text: str = "",
        instruction: str = "",
        *,
        options: Options = Options(),
        request: svc.StreamRequest | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[svc.StreamResponse, None]:
        """The Stream's events; closing the generator (``aclose``) cancels the call."""
        req = request or build_request(svc.StreamRequest, text, instruction, options)
        call = self._stub.Stream(req, timeout=timeout or self._timeout, metadata=self._meta())
        try:
            async for msg in call:
                yield msg
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
