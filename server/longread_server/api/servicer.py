"""The AnalysisService's gRPC face: reads the call's metadata and deadline, delegates to
``rpcs.AnalysisRpcs`` (everything else: authentication, admission, conversion, the record),
and writes a failure as a gRPC status with its google.rpc details."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc

from longread_server.api.convert import Undecodable
from longread_server.api.errors import ServiceError
from longread_server.api.rpcs import AnalysisRpcs, Call

Context = grpc.aio.ServicerContext[Any, Any]


class AnalysisServicer(svc_grpc.AnalysisServiceServicer):
    def __init__(self, rpcs: AnalysisRpcs, own_span: bool = True) -> None:
        # The transport-neutral RPCs; the Connect face (api/connect.py) serves these same ones.
        self.rpcs = rpcs
        # False when the OpenTelemetry gRPC interceptor makes the server span (app.py).
        self._own_span = own_span

    # Each method takes its request or, for bytes that are not one, an ``Undecodable`` (see
    # ``registry.analysis_handlers``), which converting turns into INVALID_ARGUMENT.

    async def Estimate(
        self, request: svc.EstimateRequest | Undecodable, context: Context
    ) -> svc.EstimateResponse:
        try:
            return await self.rpcs.estimate(request, self._call(context))
        except ServiceError as err:
            await context.abort_with_status(err.to_status())
            raise AssertionError("unreachable") from None

    async def Analyze(
        self, request: svc.AnalyzeRequest | Undecodable, context: Context
    ) -> svc.AnalyzeResponse:
        try:
            return await self.rpcs.analyze(request, self._call(context))
        except ServiceError as err:
            await context.abort_with_status(err.to_status())
            raise AssertionError("unreachable") from None

    async def Stream(
        self, request: svc.StreamRequest | Undecodable, context: Context
    ) -> AsyncIterator[svc.StreamResponse]:
        try:
            msgs = self.rpcs.stream(request, self._call(context))
            async with contextlib.aclosing(msgs):
                async for msg in msgs:
                    yield msg
        except ServiceError as err:
            await context.abort_with_status(err.to_status())

    def _call(self, context: Context) -> Call:
        return Call(
            context.invocation_metadata() or (),
            context.time_remaining,
            "grpc",
            self._own_span,
        )
