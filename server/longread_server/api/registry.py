"""What the gRPC server serves: the AnalysisService, health and (optionally) reflection."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc

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


def register(
    server: grpc.aio.Server, servicer: AnalysisServicer, *, reflection_on: bool
) -> health.aio.HealthServicer:
    """Adds the services to ``server``; returns the health servicer (NOT_SERVING until
    ``serving`` says otherwise)."""
    svc_grpc.add_AnalysisServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_on:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
            pool=MethodAwarePool(descriptor_pool.Default()),  # type: ignore[arg-type]
        )
    return health_servicer


async def serving(health_servicer: health.aio.HealthServicer) -> None:
    """Health says SERVING, for the server as a whole and for the AnalysisService."""
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
