"""What the gRPC server serves: the AnalysisService, health and (optionally) reflection."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from longread.v1 import analysis_service_pb2 as svc

from longread_server.api.convert import decoder
from longread_server.api.servicer import AnalysisServicer

SERVICE_NAME = svc.DESCRIPTOR.services_by_name["AnalysisService"].full_name


class MethodAwarePool:
    """A descriptor pool for reflection that also resolves method names.

    Python's reflection service answers ``file_containing_symbol`` only for messages,
    enums and services; tools such as ghz ask for ``pkg.Service.Method`` (grpc/grpc#34743).
    A method lives in its service's file, so a miss retries with the parent name.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            parent = symbol.rpartition(".")[0]
            if not parent:
                raise
            return self._pool.FindFileContainingSymbol(parent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def analysis_handlers(
    servicer: AnalysisServicer, max_request_bytes: int
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The AnalysisService's methods, as the generated ``add_..._to_server`` would register
    them, but with request deserializers that never raise (``convert.decoder``): bad bytes and
    requests over ``max_request_bytes`` reach the servicer, which answers INVALID_ARGUMENT
    with details, where gRPC alone would answer UNKNOWN."""
    return {
        "Estimate": grpc.unary_unary_rpc_method_handler(
            servicer.Estimate,
            request_deserializer=decoder(svc.EstimateRequest, max_request_bytes),
            response_serializer=svc.EstimateResponse.SerializeToString,
        ),
        "Analyze": grpc.unary_unary_rpc_method_handler(
            servicer.Analyze,
            request_deserializer=decoder(svc.AnalyzeRequest, max_request_bytes),
            response_serializer=svc.AnalyzeResponse.SerializeToString,
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            servicer.Stream,
            request_deserializer=decoder(svc.StreamRequest, max_request_bytes),
            response_serializer=svc.StreamResponse.SerializeToString,
        ),
    }


def register(
    server: grpc.aio.Server,
    servicer: AnalysisServicer,
    *,
    reflection_on: bool,
    max_request_bytes: int,
) -> health.aio.HealthServicer:
    """Adds the services to ``server``; returns the health servicer (its statuses are set by
    ``api/health.py``)."""
    handlers = analysis_handlers(servicer, max_request_bytes)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_on:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
            pool=MethodAwarePool(descriptor_pool.Default()),  # type: ignore[arg-type]
        )
    return health_servicer
