"""The one place where failures become gRPC statuses with google.rpc details.

Every error carries an ErrorInfo (domain ``longread.dev``, a reason from the proto's
ErrorReason enum); bad input adds BadRequest field violations, limits add RetryInfo and
QuotaFailure. A ``ServiceError`` is written as a gRPC status (``to_status``) or, on the HTTP
face, as a Connect error (``to_connect_error``): the same code, message and details.
"""

from __future__ import annotations

import collections
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from connectrpc.code import Code as ConnectCode
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from protobuf.wkt import Any as ConnectAny

from longread_server.domain import (
    CallRejected,
    ErrorKind,
    FieldViolation,
    InvalidRequest,
    ModelCallFailed,
    OverRequestBudget,
    UpstreamError,
)

__all__ = ["FieldViolation", "ServiceError", "Violations", "invalid", "to_service_error"]

log = logging.getLogger(__name__)
DOMAIN = "longread.dev"


MAX_MESSAGE_CHARS = 1024
MAX_FIELD_CHARS = 256
MAX_VIOLATIONS = 32


def clip(text: str, limit: int) -> str:
    """``text``, or its start and how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 32]}... ({len(text) - limit + 32} more characters)"


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    subject: str
    description: str


class ServiceError(Exception):
    """A failure with everything the client needs to act on it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        retry_after_s: float | None = None,
        quota: Sequence[QuotaViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        # Texts may quote the request (a model name, a label): bounded here, once for every
        # error, so no input can make a status outgrow gRPC's trailer limit (8 KiB by default).
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = tuple(
            FieldViolation(
                clip(v.field, MAX_FIELD_CHARS), clip(v.description, MAX_FIELD_CHARS), v.reason
            )
            for v in violations
        )[:MAX_VIOLATIONS]
        self.retry_after_s = retry_after_s
        self.quota = tuple(quota)
        self.metadata = {k: clip(v, MAX_FIELD_CHARS) for k, v in (metadata or {}).items()}

    def to_status(self) -> grpc.Status:
        details = self.details()
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        out = rpc_status.to_status(status)
        if self.code is grpc.StatusCode.UNAVAILABLE and self.reason != "DRAINING":
            # The clients' service config retries UNAVAILABLE, meant for a replica that is
            # gone or draining. This one is about an upstream or shared state that every
            # replica shares, after the gateway's own retries: gRPC's pushback of -1 tells the
            # client's channel not to retry it (the status and its RetryInfo still reach the
            # caller, whose own retry logic decides).
            trailers = (*out.trailing_metadata, (NO_RETRY_KEY, "-1"))
            return _Status(out.code, out.details, trailers)
        return out

    def to_connect_error(self) -> ConnectError:
        """The same status as a Connect error: Connect's name for the code, the same message,
        and the same google.rpc details (Connect carries each as its type name and bytes)."""
        details = [
            ErrorDetail(ConnectAny(type_url=d.type_url, value=d.value)) for d in self.details()
        ]
        return ConnectError(_CONNECT_CODES[self.code], self.message, details)

    def details(self) -> list[any_pb2.Any]:
        """ErrorInfo, then BadRequest, RetryInfo and QuotaFailure when they apply."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)
        info.metadata.update(self.metadata)
        details.append(_pack(info))
        if self.violations:
            br = error_details_pb2.BadRequest()
            for v in self.violations:
                fv = br.field_violations.add(field=v.field, description=v.description)
                if v.reason:
                    fv.reason = v.reason
            details.append(_pack(br))
        if self.retry_after_s is not None:
            secs = max(0.0, self.retry_after_s)
            nanos = round((secs - math.floor(secs)) * 1e9)
            delay = duration_pb2.Duration(seconds=math.floor(secs), nanos=min(nanos, 999_999_999))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.quota:
            qf = error_details_pb2.QuotaFailure()
            for q in self.quota:
                qf.violations.add(subject=q.subject, description=q.description)
            details.append(_pack(qf))
        return details


# gRPC's codes by Connect's names (the Connect protocol defines its codes as gRPC's).
_CONNECT_CODES: dict[grpc.StatusCode, ConnectCode] = {
    c: ConnectCode.CANCELED if c is grpc.StatusCode.CANCELLED else ConnectCode[c.name]
    for c in grpc.StatusCode
    if c is not grpc.StatusCode.OK
}


NO_RETRY_KEY = "grpc-retry-pushback-ms"


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status
):
    """A status with trailing metadata (grpc.Status is an interface with no constructor)."""


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def invalid(violations: Sequence[FieldViolation], reason: str = "INVALID_FIELD") -> ServiceError:
    """INVALID_ARGUMENT listing every bad field at once."""
    return _from_invalid(InvalidRequest(list(violations), reason))


def _from_invalid(e: InvalidRequest) -> ServiceError:
    metadata = e.metadata
    if not metadata and e.violations:
        metadata = {"fields": ",".join(v.field for v in e.violations)}
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        e.reason,
        e.message,
        violations=e.violations,
        metadata=metadata,
    )


@dataclass(slots=True)
class Violations:
    """Collects field violations so one response reports all of them."""

    items: list[FieldViolation] = field(default_factory=list)
    reason: str = "INVALID_FIELD"
    metadata: dict[str, str] = field(default_factory=dict)

    def add(self, field_path: str, description: str, reason: str = "") -> None:
        self.items.append(FieldViolation(field_path, description, reason))

    def add_error(self, e: InvalidRequest) -> None:
        """Takes in a whole refusal (e.g. ``domain.too_large``): its violations, and its
        reason and metadata for the response."""
        self.items.extend(e.violations)
        self.reason, self.metadata = e.reason, e.metadata

    def raise_if_any(self) -> None:
        if self.items:
            raise _from_invalid(InvalidRequest(self.items, self.reason, metadata=self.metadata))


_UPSTREAM_CODES: dict[ErrorKind, tuple[grpc.StatusCode, str]] = {
    ErrorKind.RATE_LIMITED: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ErrorKind.OVERLOADED: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ErrorKind.SERVER: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ErrorKind.CONNECTION: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ErrorKind.TIMEOUT: (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_UNAVAILABLE"),
    ErrorKind.BAD_REQUEST: (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_REJECTED"),
    ErrorKind.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
    # The gateway's own credentials for that upstream were refused: not the caller's fault,
    # not a bug (INTERNAL), and not something a retry fixes (UNAVAILABLE); the configuration
    # must change first, which is what FAILED_PRECONDITION says.
    ErrorKind.AUTH: (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED"),
    ErrorKind.BILLING: (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_REJECTED"),
    ErrorKind.OTHER: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
}


def from_upstream(
    err: UpstreamError, vendor: str, model: str, *, content: bool = False
) -> ServiceError:
    """The status for a model call that failed upstream. Its message is the error's message
    (the upstream, HTTP status, vendor error type and code: never content); the vendor's own
    words (``err.detail``, which may quote the prompt) are added only when ``content``
    (``telemetry.record_content``) says content may be shown."""
    code, reason = _UPSTREAM_CODES[err.kind]
    meta = {"vendor": vendor, "model": model, "upstream_error": err.kind.value}
    if err.status is not None:
        meta["upstream_status"] = str(err.status)
    if err.vendor_code or err.vendor_type:
        meta["upstream_error_code"] = err.vendor_code or err.vendor_type
    if err.request_id:
        meta["upstream_request_id"] = err.request_id
    retry = err.retry_after_s if err.kind.retryable else None
    if retry is None and err.kind.retryable:
        retry = 1.0
    message = f"upstream {vendor} ({model}) failed: {err.message}"
    if err.kind is ErrorKind.AUTH:
        meta["upstream"] = vendor
        message = (
            f"upstream {vendor!r} refused the gateway's credentials for it ({err.message}); "
            f"the key configured for {vendor!r} must be fixed, retrying will not help"
        )
    elif err.kind is ErrorKind.RATE_LIMITED:
        # The vendor's limit, not the gateway's: say whose, and when the vendor said to retry.
        meta["limit_owner"] = "upstream"
        after = (
            f"retry after {err.retry_after_s:.2f}s"
            if err.retry_after_s is not None
            else "no retry-after given"
        )
        status = f"HTTP {err.status}" if err.status is not None else "rate limited"
        message = f"upstream {vendor} ({model}) is rate limiting ({status}, {after}): {err.message}"
    if content and err.detail:
        message = f"{message}: {err.detail}"
    return ServiceError(
        code,
        reason,
        message,
        retry_after_s=retry,
        metadata=meta,
    )


_REJECTION_CODES = {
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "BUDGET_EXCEEDED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UPSTREAM_UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "NOT_CACHED": grpc.StatusCode.FAILED_PRECONDITION,
    "OVERLOADED": grpc.StatusCode.RESOURCE_EXHAUSTED,  # admission control (api/admission.py)
    "DRAINING": grpc.StatusCode.UNAVAILABLE,
}


def from_rejection(err: CallRejected) -> ServiceError:
    """A call the gateway refused: limits and budgets, open circuits, cache policy. A
    permanent refusal (a cost no bucket can ever hold) is FAILED_PRECONDITION: retrying the
    same request cannot succeed until the configuration changes."""
    code = _REJECTION_CODES.get(err.reason, grpc.StatusCode.UNAVAILABLE)
    if err.permanent:
        code = grpc.StatusCode.FAILED_PRECONDITION
    quota = [QuotaViolation(err.quota_subject, err.message)] if err.quota_subject else []
    return ServiceError(
        code,
        err.reason,
        err.message,
        retry_after_s=err.retry_after_s,
        quota=quota,
        metadata=err.metadata,
    )


class _Faults:
    """Logs unexpected exceptions with their traceback, at most ``burst`` of them per
    ``interval_s``: a request that trips a bug on every call must not flood the log. The rest
    are counted and the count is logged with the next one that is let through."""

    def __init__(self, burst: int = 10, interval_s: float = 60.0) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self._window_start = -math.inf
        self._logged = 0
        self.suppressed = 0

    def log(self, err: BaseException, error_id: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.interval_s:
            self._window_start, self._logged = now, 0
        if self._logged >= self.burst:
            self.suppressed += 1
            return
        self._logged += 1
        more = f" ({self.suppressed} more not logged)" if self.suppressed else ""
        self.suppressed = 0
        log.error("unexpected error %s%s", error_id, more, exc_info=err)


_FAULTS = _Faults()


def internal(err: BaseException) -> ServiceError:
    """INTERNAL with an id that the server's log line carries (never the exception's text,
    which may quote the request)."""
    error_id = uuid.uuid4().hex[:16]
    _FAULTS.log(err, error_id)
    return ServiceError(
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        f"internal error {error_id} ({type(err).__name__}); the server log has details",
        metadata={"error_id": error_id},
    )


def code_name(code: grpc.StatusCode) -> str:
    return str(code_pb2.Code.Name(code.value[0]))


def to_service_error(e: Exception, *, content: bool = False) -> ServiceError:
    """The status for any failure; unexpected ones are logged and become INTERNAL.
    ``content``: whether an upstream's own error text may be quoted (``from_upstream``)."""
    if isinstance(e, ServiceError):
        return e
    if isinstance(e, InvalidRequest):
        return _from_invalid(e)
    if isinstance(e, OverRequestBudget):
        return ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "BUDGET_EXCEEDED",
            str(e),
            metadata={
                "estimated_cost_usd": f"{e.estimated_usd:.6f}",
                "max_cost_usd": f"{e.max_usd:.6f}",
            },
        )
    if isinstance(e, ModelCallFailed):
        return from_upstream(e.error, e.vendor, e.model, content=content)
    if isinstance(e, UpstreamError):
        return from_upstream(e, "upstream", "", content=content)
    if isinstance(e, CallRejected):
        return from_rejection(e)
    return internal(e)
