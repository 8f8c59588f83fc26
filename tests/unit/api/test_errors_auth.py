"""The error mapping and the authenticator, without a server."""

from __future__ import annotations

import grpc
import pytest
from connectrpc.code import Code
from google.rpc import error_details_pb2, status_pb2
from longread_server.api.auth import LOCAL_TENANT, Authenticator
from longread_server.api.errors import (
    DOMAIN,
    FieldViolation,
    QuotaViolation,
    ServiceError,
    from_upstream,
    invalid,
)
from longread_server.config import TenantConfig
from longread_server.domain import ErrorKind, UpstreamError


def details(err: ServiceError) -> dict[str, object]:
    status = err.to_status()
    trailers = dict(status.trailing_metadata)
    proto = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert proto.code == status.code.value[0] and proto.message == status.details
    out: dict[str, object] = {}
    for cls in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        error_details_pb2.QuotaFailure,
    ):
        for a in proto.details:
            if a.Is(cls.DESCRIPTOR):
                msg = cls()
                a.Unpack(msg)
                out[cls.__name__] = msg
    return out


def test_invalid_lists_every_violation_with_error_info() -> None:
    err = invalid([FieldViolation("a", "bad"), FieldViolation("b.c", "worse")])
    d = details(err)
    info = d["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.domain == DOMAIN and info.reason == "INVALID_FIELD"
    br = d["BadRequest"]
    assert isinstance(br, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in br.field_violations] == [
        ("a", "bad"),
        ("b.c", "worse"),
    ]
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


def test_retry_info_and_quota_failure() -> None:
    err = ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        "slow down",
        retry_after_s=1.25,
        quota=[QuotaViolation("tenant:acme", "tokens per minute")],
    )
    d = details(err)
    ri = d["RetryInfo"]
    assert isinstance(ri, error_details_pb2.RetryInfo)
    assert (ri.retry_delay.seconds, ri.retry_delay.nanos) == (1, 250_000_000)
    qf = d["QuotaFailure"]
    assert isinstance(qf, error_details_pb2.QuotaFailure)
    assert qf.violations[0].subject == "tenant:acme"


@pytest.mark.parametrize(
    ("kind", "code", "retry"),
    [
        (ErrorKind.RATE_LIMITED, grpc.StatusCode.UNAVAILABLE, True),
        (ErrorKind.OVERLOADED, grpc.StatusCode.UNAVAILABLE, True),
        (ErrorKind.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT, False),
        (ErrorKind.NOT_FOUND, grpc.StatusCode.NOT_FOUND, False),
        (ErrorKind.AUTH, grpc.StatusCode.FAILED_PRECONDITION, False),
        (ErrorKind.TIMEOUT, grpc.StatusCode.DEADLINE_EXCEEDED, True),
    ],
)
def test_upstream_errors(kind: ErrorKind, code: grpc.StatusCode, retry: bool) -> None:
    err = from_upstream(
        UpstreamError(kind, "boom", status=503, retry_after_s=2.0, request_id="req_1"),
        "openai",
        "gpt-4o",
    )
    assert err.code == code
    assert (err.retry_after_s is not None) == retry
    assert err.metadata["upstream_request_id"] == "req_1" and err.metadata["vendor"] == "openai"


def test_a_vendor_429_names_the_upstream_and_its_retry_after() -> None:
    vendor_text = "Rate limit reached for requests per min (RPM)"
    err = from_upstream(
        UpstreamError(ErrorKind.RATE_LIMITED, vendor_text, status=429, retry_after_s=2.5),
        "openai",
        "gpt-4o",
    )
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert err.message.startswith(
        "upstream openai (gpt-4o) is rate limiting (HTTP 429, retry after 2.50s)"
    )
    assert vendor_text in err.message and err.retry_after_s == 2.5
    assert err.metadata["limit_owner"] == "upstream"
    quiet = from_upstream(UpstreamError(ErrorKind.RATE_LIMITED, "slow down"), "anthropic", "m")
    assert "no retry-after given" in quiet.message and quiet.retry_after_s == 1.0


def test_authenticator() -> None:
    open_auth = Authenticator([])
    assert not open_auth.enabled and open_auth.tenant(None) == LOCAL_TENANT
    auth = Authenticator(
        [TenantConfig("acme", api_keys=["k1", "k2"]), TenantConfig("b", api_keys=["k3"])]
    )
    assert auth.tenant([("authorization", "Bearer k2")]) == "acme"
    assert auth.tenant([("x", "y"), ("authorization", "bearer k3")]) == "b"
    for md in ([], [("authorization", "Bearer nope")], [("authorization", "Basic k1")]):
        with pytest.raises(ServiceError) as info:
            auth.tenant(md)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_the_vendors_words_reach_the_caller_only_when_content_may_be_shown() -> None:
    failed = UpstreamError(
        ErrorKind.BAD_REQUEST,
        "openai: HTTP 400 Bad Request (invalid_request_error)",
        status=400,
        vendor_code="invalid_prompt",
        detail="Invalid prompt: 'the secret plan'",
    )
    hidden = from_upstream(failed, "openai", "gpt-4o")
    assert "secret" not in hidden.message
    assert hidden.metadata["upstream_error_code"] == "invalid_prompt"
    shown = from_upstream(failed, "openai", "gpt-4o", content=True)
    assert shown.message.endswith(": Invalid prompt: 'the secret plan'")


def test_a_refused_upstream_key_names_the_upstream_and_is_a_precondition() -> None:
    refused = UpstreamError(ErrorKind.AUTH, "deepseek: HTTP 401 Unauthorized", status=401)
    err = from_upstream(refused, "deepseek", "deepseek-chat", content=True)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED")
    assert err.metadata["upstream"] == "deepseek" and err.retry_after_s is None
    assert err.message.startswith("upstream 'deepseek' refused the gateway's credentials")


# ---- the same status as a Connect error (the HTTP face) ----


def test_a_connect_error_carries_the_status_code_message_and_details() -> None:
    err = ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        "slow down",
        violations=[FieldViolation("document.text", "too long")],
        retry_after_s=1.5,
        quota=[QuotaViolation("tenant:acme/requests_per_minute", "spent")],
        metadata={"limit_owner": "gateway"},
    )
    ce = err.to_connect_error()
    assert ce.code is Code.RESOURCE_EXHAUSTED and ce.message == "slow down"
    assert [(d.type_name, d.message_bytes) for d in ce.details] == [
        (d.type_url.removeprefix("type.googleapis.com/"), d.value) for d in err.details()
    ]
    assert [d.type_name for d in ce.details] == [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.QuotaFailure",
    ]


def test_every_code_has_its_connect_name() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        name = ServiceError(code, "R", "m").to_connect_error().code.value
        assert name == ("canceled" if code is grpc.StatusCode.CANCELLED else code.name.lower())
