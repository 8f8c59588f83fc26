"""The servicer in process: a fake grpc.aio servicer context, and a status's details decoded."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
)


class FakeContext:
    """What the servicer asks of ``grpc.aio.ServicerContext``: the caller's metadata, the time
    left, and an abort that, as grpc's does, ends the handler by raising."""

    def __init__(
        self, metadata: Sequence[tuple[str, str]] = (), time_remaining: float | None = None
    ) -> None:
        self._metadata = tuple(metadata)
        self._remaining = time_remaining
        self.status: grpc.Status | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._remaining

    async def abort_with_status(self, status: grpc.Status) -> None:
        assert self.status is None, "aborted twice"
        self.status = status
        raise grpc.aio.AbortError()


def decode(status: grpc.Status) -> dict[str, Message]:
    """The google.rpc details the status carries, by type name; checks that the code and
    message in the details agree with the status itself."""
    trailers = dict(status.trailing_metadata)
    proto = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert proto.code == status.code.value[0] and proto.message == status.details
    found: dict[str, Message] = {}
    for packed in proto.details:
        for cls in DETAIL_TYPES:
            if packed.Is(cls.DESCRIPTOR):
                msg = cls()
                packed.Unpack(msg)
                found[cls.__name__] = msg
    return found
