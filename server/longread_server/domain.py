"""Domain types shared by every part of the gateway.

Plain dataclasses: protobuf types never leave ``api/``, vendor wire formats never leave
``vendors/``. A model call is an ``LlmRequest`` in and an async iterator of ``LlmEvent`` out,
so streaming and non-streaming calls share one path.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]


class VendorKind(enum.StrEnum):
    """The wire protocol an upstream speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai_compatible"


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn sent to a model. The system prompt travels separately."""

    role: Role
    content: str


class Operation(enum.StrEnum):
    """What a model call asks of the vendor."""

    CHAT = "chat"  # generate an answer: TextDeltas, then one Finish
    COUNT_TOKENS = "count_tokens"  # count the prompt's input tokens: one TokenCount
    EMBEDDING = "embeddings"  # embed the text of the one message: one Embedding, then a Finish


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """A vendor-neutral request: what the gateway asks one model to do."""

    model: str
    messages: tuple[Message, ...]
    max_output_tokens: int
    system: str = ""
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = True
    # Number of leading messages (after the system prompt) that form a prefix shared by many
    # calls; adapters mark it for vendor prompt caching (Anthropic cache_control).
    cache_prefix_messages: int = 0
    # Groups vendor prompt caching (OpenAI prompt_cache_key), e.g. per document.
    prompt_cache_key: str = ""
    # The planner's count of the document text in that prefix: a fallback to another model
    # keeps the breakpoint only if this reaches that model's minimum cacheable length.
    cache_prefix_tokens: int = 0
    # Lifetime of Anthropic cache breakpoints: "5m" (the vendor's default) or "1h".
    cache_ttl: str = "5m"
    # OpenAI ``prompt_cache_retention`` ("24h"), sent only when the model supports it ("": not).
    prompt_cache_retention: str = ""
    # Prompt tokens as the planner counted them (0: unknown). Rate limits reserve this plus
    # max_output_tokens before the call, without tokenizing the prompt again.
    estimated_prompt_tokens: int = 0
    operation: Operation = Operation.CHAT


@dataclass(slots=True)
class Usage:
    """Token usage normalized across vendors. ``input_tokens`` includes cached tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    calls: int = 0
    # The part of cache_write_tokens written with a 1-hour TTL (Anthropic prices it apart).
    cache_write_1h_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_write_1h_tokens += other.cache_write_1h_tokens
        self.calls += other.calls


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of answer text, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The last event of a successful call."""

    finish_reason: str  # normalized: "stop", "length", "tool_calls", "content_filter", ...
    usage: Usage
    model: str = ""  # the model the vendor reports
    response_id: str = ""
    cached: bool = False  # answered from the gateway's response cache, not upstream
    # Set when a model of the call's fallback chain answered instead of the one asked for:
    # usage is that model's, so it is priced and reported as that model's.
    fallback: FallbackNote | None = None


@dataclass(frozen=True, slots=True)
class TokenCount:
    """The one event of a COUNT_TOKENS call: the vendor's count of the prompt."""

    input_tokens: int


@dataclass(frozen=True, slots=True)
class Embedding:
    """The vector of an EMBEDDING call (its usage is on the Finish that follows)."""

    values: tuple[float, ...]


LlmEvent = TextDelta | Finish | TokenCount | Embedding


class ErrorKind(enum.StrEnum):
    """What went wrong upstream; decides retries and whether a circuit breaker counts it."""

    RATE_LIMITED = "rate_limited"  # 429
    OVERLOADED = "overloaded"  # 529, 503, Anthropic overloaded_error
    SERVER = "server"  # other 5xx, mid-stream server error
    TIMEOUT = "timeout"  # connect/read timeout
    CONNECTION = "connection"  # reset, refused, protocol error, malformed stream
    BAD_REQUEST = "bad_request"  # 400, 413, 422
    AUTH = "auth"  # 401, 403
    NOT_FOUND = "not_found"  # 404 (unknown model)
    BILLING = "billing"  # 402, insufficient quota
    OTHER = "other"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def upstream_fault(self) -> bool:
        """True when the fault is the upstream's (counts toward opening a breaker)."""
        return self in _UPSTREAM_FAULTS


_RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
    }
)
# AUTH is not among them on purpose: a refused key says nothing about the upstream's health,
# and an open circuit would turn the one answer that names the fix (the gateway's
# credentials for that upstream, FAILED_PRECONDITION) into UNAVAILABLE, which callers retry,
# and would send the traffic of every tenant to fallbacks until it closes again.
_UPSTREAM_FAULTS = frozenset(
    {ErrorKind.OVERLOADED, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a vendor's rate-limit headers said (None where a header was absent)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


class UpstreamError(Exception):
    """A failed model call, normalized across vendors."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        vendor_type: str = "",
        vendor_code: str = "",
        retry_after_s: float | None = None,
        rate_limits: RateLimitInfo | None = None,
        request_id: str = "",
        streamed: bool = False,
        unsent: bool = False,
        cut_by_deadline: bool = False,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        # What happened, from the parts of the answer that are not content: the upstream's
        # name, the HTTP status, the vendor's error type and code. It is the exception's text,
        # so it is what tracebacks, span events and client errors carry.
        self.message = message
        # The vendor's own words (its error message, or a body that is not JSON): vendors
        # quote the request in them (the prompt of a refused request, a masked key), so they
        # are never part of ``message``; they are recorded only where content is
        # (``telemetry.record_content``), and never for a refused key (``vendors.errors``).
        self.detail = detail
        self.status = status
        self.vendor_type = vendor_type
        self.vendor_code = vendor_code
        self.retry_after_s = retry_after_s
        self.rate_limits = rate_limits
        self.request_id = request_id
        # True when answer text had already been received when the call failed.
        self.streamed = streamed
        # True when the attempt never reached the upstream (the caller's deadline had passed
        # before it could start): says nothing about the upstream's health.
        self.unsent = unsent
        # True when the caller's deadline, not a limit of the attempt's own, ended the
        # attempt while the upstream was still within its time: no verdict on its health.
        self.cut_by_deadline = cut_by_deadline

    def __repr__(self) -> str:
        return (
            f"UpstreamError(kind={self.kind.value!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )


class ModelCallFailed(Exception):
    """A job's model call failed upstream: ``error``, with the upstream and model it went to."""

    def __init__(self, error: UpstreamError, vendor: str, model: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.vendor = vendor
        self.model = model


class CallRejected(Exception):
    """The gateway itself would not or could not make a call: a rate limit, an open circuit,
    a budget, or a cache policy. ``reason`` is an ErrorReason name (without the prefix)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        quota_subject: str = "",
        metadata: dict[str, str] | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.quota_subject = quota_subject  # e.g. "tenant:acme/tokens_per_minute"
        self.metadata = dict(metadata or {})
        # True when retrying cannot help (e.g. a cost larger than a bucket can ever hold).
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A catalog entry: limits and prices (USD per million tokens)."""

    vendor: str  # upstream name, e.g. "openai", "anthropic", "deepseek"
    model: str
    context_window: int
    max_output_tokens: int
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float
    tokenizer: str = "cl100k_base"  # "cl100k_base" is exact for this model; else an estimate
    tokens_exact: bool = False
    # Input written to the vendor's prompt cache (Anthropic: 1.25x input for 5-minute
    # writes); 0: the input price (vendors that do not charge for writes).
    cache_write_per_mtok: float = 0.0
    # Input written with a 1-hour TTL (Anthropic: 2x input); 0: cache_write_per_mtok.
    cache_write_1h_per_mtok: float = 0.0
    # The shortest prefix the vendor caches, in tokens (Anthropic: per model; 0: none asked).
    cache_min_tokens: int = 0
    # OpenAI extended prompt cache retention the model accepts ("24h"; "": in-memory only).
    prompt_cache_retention: str = ""


class FallbackReason(enum.StrEnum):
    """Why a call left the model it asked for for the next one in its fallback chain."""

    CIRCUIT_OPEN = "circuit_open"  # the upstream's breaker refused the call
    RATE_LIMITED = "rate_limited"  # still 429 (or held by its Retry-After) after the retries
    UPSTREAM_ERROR = "upstream_error"  # still 5xx / overloaded after the retries
    CONTEXT_OVERFLOW = "context_overflow"  # the vendor said the prompt exceeds the window


@dataclass(frozen=True, slots=True)
class FallbackNote:
    """Which model answered a call instead of the one asked for, and why."""

    reason: FallbackReason
    from_upstream: str
    from_model: str
    model: ModelInfo  # the model that answered (its upstream is ``model.vendor``)
    detail: str = ""  # the error that made the call move on

    def describe(self) -> str:
        to = f"{self.model.vendor}/{self.model.model}"
        why = f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value
        return f"{self.from_upstream}/{self.from_model} -> {to} ({why})"


class ModelPreference(enum.StrEnum):
    """How to pick a model when the request names none."""

    DEFAULT = "default"  # the configured default model
    CHEAPEST = "cheapest"  # the cheapest one that fits the document in one call
    LARGEST_CONTEXT = "largest_context"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One request field that is wrong, and why (``reason``: an ErrorReason name, or "")."""

    field: str
    description: str
    reason: str = ""


class InvalidRequest(Exception):
    """The request cannot be served as asked; ``violations`` name the fields to change."""

    def __init__(
        self,
        violations: tuple[FieldViolation, ...] | list[FieldViolation],
        reason: str = "INVALID_FIELD",
        *,
        metadata: dict[str, str] | None = None,
        message: str = "",
    ) -> None:
        self.violations = tuple(violations)
        self.reason = reason
        self.metadata = dict(metadata or {})
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        self.message = message or f"invalid request: {text}"
        super().__init__(self.message)


class OverRequestBudget(Exception):
    """The job's estimated cost exceeds the request's own ``budget.max_cost_usd``."""

    def __init__(self, estimated_usd: float, max_usd: float) -> None:
        self.estimated_usd = estimated_usd
        self.max_usd = max_usd
        super().__init__(
            f"estimated cost ${estimated_usd:.6f} exceeds the request's budget of ${max_usd:.6f}"
        )


def too_large(field: str, what: str, size: int | None, limit: int, unit: str) -> InvalidRequest:
    """DOCUMENT_TOO_LARGE, worded one way for every size limit (bytes, characters, tokens).

    ``size`` None: counting stopped at the limit, so only "more than" is known.
    """
    told = f"more than {limit}" if size is None else str(size)
    description = f"is {told} {unit}; the limit is {limit} {unit}"
    metadata = {"limit": str(limit), "unit": unit}
    if size is not None:
        metadata["size"] = str(size)
    return InvalidRequest(
        [FieldViolation(field, description, "DOCUMENT_TOO_LARGE")],
        "DOCUMENT_TOO_LARGE",
        metadata=metadata,
        message=f"{what} {description}",
    )
