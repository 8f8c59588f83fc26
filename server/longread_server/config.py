"""Typed configuration: defaults, then a TOML file, then ``LONGREAD_*`` environment variables.

Environment variables name a setting by its path with ``__`` between levels, e.g.
``LONGREAD_LISTEN=0.0.0.0:50051`` or ``LONGREAD_SERVER__GRACE_S=10``. Values are parsed by the
setting's type: a list of strings as comma-separated text or a JSON array, a table (e.g.
``LONGREAD_SERVER``) as a JSON object of the keys it changes, a list of tables (upstreams,
tenants, models) as a JSON array of objects that replaces the file's. One entry of upstreams
or tenants is reached by its name: ``LONGREAD_UPSTREAMS__OPENAI__TIMEOUT_S=30`` changes the
upstream named ``openai`` (``-`` and ``.`` in a name are ``_`` in a variable), or adds it when
the variables give what an entry needs (``KIND`` and ``BASE_URL``; for a well-known vendor
its defaults). API keys come from the environment: the variable each upstream or tenant names
(``api_key_env``, ``api_keys_env``), or ``LONGREAD_UPSTREAMS__<NAME>__API_KEY`` itself.

Every error is a :class:`ConfigError` naming the setting and where it was given.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longread_server import preflight
from longread_server.domain import VendorKind

ENV_PREFIX = "LONGREAD_"
EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # server.event_loop
# Read by the client and CLI, not by the server.
_CLIENT_ENV = frozenset({"LONGREAD_CONFIG", "LONGREAD_TARGET", "LONGREAD_API_KEY"})
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The configuration is invalid: ``why``, about ``setting`` (a path such as
    ``tls.cert_file``) as ``source`` gave it (a file, an environment variable, a flag)."""

    def __init__(self, why: str, *, setting: str = "", source: str = "", hint: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.setting = setting
        self.source = source
        self.hint = hint  # what to do about it, when the error knows better than its setting

    def __str__(self) -> str:
        if not self.setting:
            return self.why
        where = f"{self.setting} ({self.source})" if self.source else self.setting
        return f"{where}: {self.why}"


@dataclass
class ServerConfig:
    """gRPC server options."""

    # The largest request accepted, in bytes; 0: what the [limits] allow in any script
    # (``request_bytes_limit``). Larger requests, up to twice this, are refused with
    # INVALID_ARGUMENT and the limit; beyond that gRPC itself refuses them.
    max_message_bytes: int = 0
    grace_s: float = 15.0  # graceful drain on SIGTERM: how long in-flight RPCs may run on
    # From SIGTERM, health says NOT_SERVING while new RPCs are still served for this long (so
    # balancers and health-watching clients move away first); the grace period follows.
    drain_delay_s: float = 1.0
    keepalive_time_ms: int = 20_000
    keepalive_timeout_ms: int = 10_000
    # A connection is closed (GOAWAY) after this age, so that clients re-resolve the name and
    # spread over replicas added since they connected (a long-lived HTTP/2 connection would
    # otherwise pin a client to one replica for its lifetime); 0: no limit. The RPCs in flight
    # on the old connection get ``max_connection_age_grace_s`` more to finish (0: no limit);
    # one still running then is cut with UNAVAILABLE after its first message, which no client
    # retries, so the grace is as long as a long job (an upstream attempt may take
    # ``upstreams.timeout_s``), not a few seconds: new RPCs move at once either way.
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = 900.0
    # The older spelling of max_connection_age_s, in milliseconds; when set, it wins.
    max_connection_age_ms: int = 0
    max_concurrent_rpcs: int = 0  # 0: unlimited
    reflection: bool = True
    # Open connections to upstreams, all of them together (0: no cap). A call that finds
    # them all busy waits for one, within its own deadline (vendors/transport.py).
    upstream_max_connections: int = 1000
    # Chose between two upstream clients; there is one now (httpx). Still accepted, with a
    # warning, so configs written for older versions load.
    http_client: str = ""
    # Health (``api/health.py``): liveness ("liveness") says NOT_SERVING once the event loop
    # has not run a watchdog thread's heartbeat for this long, SERVING again when it does;
    # 0: no watchdog (liveness always SERVING). A blocked loop answers no RPC, health
    # included, so a probe during the block times out either way; the status tells watchers
    # and the log what happened, and is the threshold to set the probe's timeout against.
    liveness_block_s: float = 10.0
    # How often readiness ("" and the AnalysisService) is re-evaluated: Redis, when
    # ``redis_required``, and the upstreams' circuits.
    readiness_interval_s: float = 1.0
    # A Stream whose next answer delta has waited this long for its transport (the client or
    # the event loop is behind) sends the deltas of the same call waiting behind it as one
    # message: the same text in the same order, in fewer writes. 0: every delta on its own.
    stream_coalesce_after_ms: float = 20.0
    # The event loop ``longread serve`` runs on: "auto" is uvloop where it is installed (a
    # dependency on Linux and macOS), else asyncio's own; "uvloop" requires it; "asyncio" is
    # the standard library's. Every socket the gateway holds (gRPC's completion queue, each
    # upstream stream, Redis) is served by it, so its cost per callback is paid per delta.
    event_loop: str = "auto"
    # The cyclic garbage collector's thresholds in ``longread serve``, as ``gc.set_threshold``
    # takes them: the young generation's, then how many collections of each generation make
    # one of the next; empty: Python's own (700, 10, 10). The young threshold counts container
    # objects made and not yet freed. An open Stream keeps a few hundred alive (its
    # generators, coroutines, futures), so at 700 the young generation is collected every few
    # Streams opened, the objects of the Streams in flight are moved on to the older
    # generations, and their collections walk all of them again while the event loop waits:
    # for up to ~100 ms with a thousand Streams open, enough to make one Stream in a hundred
    # late with its first token.
    gc_thresholds: list[int] = field(default_factory=lambda: [50_000, 10, 10])


@dataclass
class AdmissionConfig:
    """Admission control of the AnalysisService's RPCs (``api/admission.py``): a concurrency
    limit adapted to the event loop's lag, refusals beyond it, a fair share per tenant."""

    # Off by default: a burst of RPCs that mostly wait on their vendor (long streams) is no
    # overload, yet a lag spike (a long document planned on the loop) can cut the limit below it.
    enabled: bool = False
    target_lag_ms: float = 5.0  # the loop's ready-queue delay the limit is steered to
    initial_limit: int = 64
    min_limit: int = 8
    max_limit: int = 10_000
    window_s: float = 0.1  # the limit is updated once per window
    sample_interval_ms: float = 5.0  # one lag sample per interval
    retry_after_s: float = 0.5  # RetryInfo of a refusal (OVERLOADED)
    drain_retry_after_s: float = 1.0  # RetryInfo of a refusal or cut while draining (DRAINING)

    def validate(self) -> None:
        for name in ("target_lag_ms", "window_s", "sample_interval_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"admission.{name} must be positive")
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigError("admission: 1 <= min_limit <= initial_limit <= max_limit")
        if self.retry_after_s < 0 or self.drain_retry_after_s < 0:
            raise ConfigError("admission: retry delays must not be negative")


@dataclass
class TlsConfig:
    """TLS for the gRPC listener; mTLS when a client CA is given."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""  # set: clients must present a certificate signed by this CA

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file and self.key_file)


@dataclass
class HttpConfig:
    """The HTTP listener: the AnalysisService over Connect (JSON or binary protobuf, unary
    and server streaming) and gRPC-Web, for curl, browsers and HTTP/1.1 clients
    (``api/connect.py``); the same RPCs, keys, limits and errors as the gRPC listener, and
    its TLS settings ([tls]) when they are set."""

    # host:port, e.g. "127.0.0.1:8081"; empty: no HTTP listener. Off by default, so an
    # upgrade opens no port that a deployment did not ask for.
    listen: str = ""
    # The page to try the service at "/" of this listener (server/longread_server/web). Off
    # by default: a deployment serves its API, not a playground, unless it asks for one.
    ui: bool = False


@dataclass
class UpstreamConfig:
    """One LLM endpoint the gateway may call."""

    name: str
    kind: VendorKind
    base_url: str
    api_key_env: str = ""
    models: list[str] = field(default_factory=list)  # empty: every catalog model of `name`
    timeout_s: float = 600.0
    max_concurrency: int = 8  # concurrent map calls of one job
    # Token buckets for this upstream across all tenants (0: unlimited).
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    burst_requests: float = 0.0
    burst_tokens: float = 0.0
    # Shorthand for a one-entry fallback chain of this upstream's calls (see
    # FallbackChainConfig): another upstream, or "upstream/model".
    fallback: str = ""
    # gen_ai.provider.name in this upstream's telemetry; empty: the well-known provider of
    # base_url's host, else the protocol's (vendors/peer.py has the rule).
    provider: str = ""
    api_key: str = ""  # resolved from api_key_env at load time, never from the file


@dataclass
class TenantConfig:
    """A caller. API keys come from environment variables, as a comma-separated list."""

    name: str
    api_keys_env: str = ""
    monthly_budget_usd: float = 0.0  # 0: unlimited
    # Token buckets per tenant (0: unlimited). Burst 0 means "one minute's worth".
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    burst_requests: float = 0.0
    burst_tokens: float = 0.0
    # Semantic reuse for this tenant's requests unless a request turns it off (cache.semantic).
    semantic_cache: bool = False
    api_keys: list[str] = field(default_factory=list)  # resolved at load time


@dataclass
class LimitsConfig:
    """Request limits."""

    max_document_chars: int = 8_000_000
    max_document_tokens: int = 2_000_000
    max_instruction_chars: int = 100_000  # also the system prompt's limit
    max_history_turns: int = 256
    max_history_chars: int = 1_000_000  # all turns together
    default_output_tokens: int = 2048  # single pass and reduce calls
    map_output_tokens: int = 1024  # each map call
    default_chunk_tokens: int = 16_000  # chunk size when the document does not fit one call
    max_chunks: int = 2048


@dataclass
class SemanticCacheConfig:
    """Semantic reuse (run/semantic.py): off unless a tenant (``tenants[].semantic_cache``) or a
    request (``cache.semantic``) asks for it. A reuse needs the same tenant, document,
    model, strategy and answer-changing options, the same facts in the question (numbers,
    dates, periods, negation, comparisons, names) and embeddings at least ``threshold`` alike."""

    # "local": the offline model of the `semantic` extra (WordLlama, 256 dimensions); or the
    # name of an OpenAI-compatible upstream, whose /v1/embeddings embeds each question.
    embeddings: str = "local"
    embedding_model: str = "text-embedding-3-small"  # with an upstream
    # The cosine similarity a reuse needs, unless a request sets its own. With the local
    # model, `python -m bench.semantic` finds every reuse right at this threshold on the
    # labelled pairs the facts guard was written from, and 50-75 % right on two sets no rule
    # was written from (the README's "How often it is right").
    threshold: float = 0.75
    max_question_chars: int = 2000  # longer instructions are not looked up or stored
    max_questions: int = 64  # per scope (tenant, document, model, options)
    max_entries: int = 50_000  # in process, all scopes

    def validate(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ConfigError("cache.semantic.threshold must be in (0, 1]")
        for name in ("max_question_chars", "max_questions", "max_entries"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cache.semantic.{name} must be positive")
        if not self.embeddings.strip():
            raise ConfigError('cache.semantic.embeddings must be "local" or an upstream\'s name')


@dataclass
class CacheConfig:
    """Response cache and single-flight (calls/cache.py, calls/singleflight.py)."""

    enabled: bool = True
    max_bytes: int = 256 * 1024 * 1024  # the in-process LRU (also Redis's local fallback)
    ttl_s: float = 24 * 3600.0  # default time to live of an answer
    max_ttl_s: float = 30 * 24 * 3600.0  # cap on a request's own cache TTL
    max_entry_bytes: int = 8 * 1024 * 1024  # larger answers are served but not stored
    key_version: int = 1  # bump to start from an empty cache (old keys just expire)
    strict_whitespace: bool = False  # True: leading/trailing whitespace of text counts
    share_across_tenants: bool = False  # True: tenants share answers (never in-flight calls)
    single_flight: bool = True  # coalesce concurrent identical misses into one upstream call
    redis: bool = True  # with redis_url set: share answers and leases across replicas
    redis_prefix: str = "longread:cache:"
    local_fallback: bool = True  # while Redis is down, use the in-process LRU
    lock_ttl_s: float = 30.0  # single-flight lease; renewed while the call runs
    flight_wait_s: float = 600.0  # a waiter on another replica's call gives up after this
    # Vendor prompt caching (not this cache): the lifetime of Anthropic cache breakpoints,
    # "5m" (writes at 1.25x input) or "1h" (2x), or "off" for no breakpoints; and whether
    # OpenAI models that support it get extended (24h) retention.
    vendor_ttl: str = "5m"
    vendor_extended_retention: bool = True
    semantic: SemanticCacheConfig = field(default_factory=SemanticCacheConfig)

    def validate(self) -> None:
        self.semantic.validate()
        if self.vendor_ttl not in ("5m", "1h", "off"):
            raise ConfigError('cache.vendor_ttl must be "5m", "1h" or "off"')
        for name in ("max_bytes", "ttl_s", "max_ttl_s", "max_entry_bytes", "lock_ttl_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cache.{name} must be positive")
        if self.flight_wait_s < 0:
            raise ConfigError("cache.flight_wait_s must not be negative")
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            # A brace would become the Redis Cluster hash tag of every key: all answers in one
            # slot, or (with "{}") an answer's keys in different slots, which scripts refuse.
            raise ConfigError("cache.redis_prefix must not contain { or }")


@dataclass
class BudgetConfig:
    """Tenants' monthly budgets (calls/budget.py); the caps are ``tenants[].monthly_budget_usd``."""

    # Where spend is kept across restarts when there is no Redis (one gateway per directory);
    # empty: in process only, and the gateway warns at start-up that spend is volatile.
    state_dir: str = ""
    # With Redis, a job's reservation is a lease: given back by any replica once the job's
    # deadline plus this margin has passed without it settling (its replica died), so a
    # request retried on another replica is not charged twice. A job without a deadline holds
    # its lease for ``reservation_lease_s``.
    reservation_margin_s: float = 60.0
    reservation_lease_s: float = 3600.0


@dataclass
class TelemetryConfig:
    """OpenTelemetry traces, metrics and logs. Everything that costs is off by default.

    The standard ``OTEL_*`` variables mean what they mean to the OpenTelemetry SDK and win over
    the setting they overlap (``telemetry/settings.py`` resolves both in one place)."""

    traces: bool = False
    metrics: bool = False
    logs: bool = False  # log records over OTLP too, beside the JSON lines
    otlp_endpoint: str = ""  # e.g. "http://collector:4317": every signal that is on, over OTLP
    otlp_protocol: str = "grpc"  # or "http/protobuf" (then e.g. "http://collector:4318")
    sampling_ratio: float = 1.0  # of new traces; a caller's sampled traceparent is honoured
    # SDK span processors to add, each "package.module:name" of a SpanProcessor, its class, or
    # a function of no arguments returning one (they run off the event loop: tracing.py).
    span_processors: list[str] = field(default_factory=list)
    # Content on spans and in logs (opt-in): documents, prompts, answers, an upstream's error
    # text (also in the status a client gets), exception messages not worded by the gateway.
    # Keys never, whatever this says.
    record_content: bool = False
    # A span per upstream HTTP request (httpx) and per Redis command, under the model-call
    # and state spans: one more span per call, off unless asked for.
    client_spans: bool = False
    # Server spans from the OpenTelemetry gRPC aio instrumentation's interceptor instead of
    # the servicer's own (api/rpc_record.py): the same conventions, more CPU per RPC (it wraps
    # every servicer context).
    grpc_instrumentation: bool = False
    # Exemplars: metric points that link to a sampled trace (trace and span id), sent over
    # OTLP. Each recording inside a sampled span is offered to a reservoir: off by default.
    exemplars: bool = False
    service_name: str = "longread"
    metrics_interval_ms: int = 10_000
    prometheus: bool = False  # serve /metrics for scraping
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9464  # 0: any free port
    json_logs: bool = True  # `longread serve` logs one JSON object per line
    log_level: str = "INFO"
    access_log: bool = True  # one line per RPC with its outcome


@dataclass
class EmbeddedSandboxConfig:
    """``[sandbox]``: the vendor emulator (``longread-sandbox``, when installed), started
    in-process when no vendor is configured."""

    enabled: bool | None = None  # None: only when no upstream is configured
    port: int = 0
    latency_ms: float = 0.0


@dataclass
class CatalogOverride:
    """Adds or replaces one catalog entry."""

    vendor: str
    model: str
    context_window: int
    max_output_tokens: int
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float = 0.0
    cache_write_per_mtok: float = 0.0  # 0: the input price
    cache_write_1h_per_mtok: float = 0.0  # 0: cache_write_per_mtok
    cache_min_tokens: int = 0  # the shortest prefix the vendor caches (Anthropic)
    prompt_cache_retention: str = ""  # OpenAI extended retention the model accepts ("24h")
    tokenizer: str = "cl100k_base"
    tokens_exact: bool = False


# --- resilience (calls/limits.py, calls/breaker.py, calls/retry.py, calls/concurrency.py) ---


@dataclass
class BreakerConfig:
    """Circuit breaker per upstream, with resilience4j's semantics (``state/breakers.py``)."""

    enabled: bool = True
    window: str = "count"  # "count": the last window_size attempts; "time": window_size seconds
    window_size: int = 100
    min_calls: int = 50  # attempts in the window before it may open
    failure_rate: float = 0.5  # share of upstream faults (5xx, 529, timeouts, resets) that opens
    slow_call_rate: float = 1.0  # share of slow attempts that opens (1.0: only if all are slow)
    slow_call_s: float = 60.0  # an attempt is slow when its first event takes this long
    open_s: float = 30.0  # first wait in OPEN
    open_backoff: float = 2.0  # each re-open multiplies the wait
    open_max_s: float = 300.0
    half_open_calls: int = 3  # probe attempts let through after the wait
    half_open_max_s: float = 120.0  # re-open if the probes have not all reported by then


@dataclass
class RetryConfig:
    """Retries of failed attempts: full-jitter backoff, Retry-After, a budget, the deadline."""

    max_attempts: int = 3  # including the first
    base_s: float = 0.5  # backoff before retry n: uniform(0, min(cap_s, base_s * 2**(n-1)))
    cap_s: float = 20.0
    budget_ratio: float = 0.2  # retries per upstream <= ratio * calls (+ budget_min_retries)
    budget_min_retries: int = 3  # retries always allowed per budget window
    budget_window_s: float = 10.0


@dataclass
class ConcurrencyConfig:
    """Adaptive (AIMD) concurrency of map fan-out per upstream, up to its max_concurrency."""

    adaptive: bool = True
    min: int = 1
    backoff: float = 0.5  # multiplicative decrease on a 429/overload or rising latency
    latency_tolerance: float = 2.0  # recent latency above this many times the baseline: back off
    cooldown_s: float = 1.0  # at most one decrease per cooldown


@dataclass
class AttemptOverride:
    """``[[resilience.attempt.overrides]]``: other attempt limits for one upstream, or for some
    of its models. Unset fields keep the value from before; later overrides win."""

    upstream: str = ""  # "": every upstream
    models: list[str] = field(default_factory=list)  # shell-style patterns; empty: every model
    first_event_base_s: float | None = None
    first_event_per_1k_prompt_s: float | None = None
    first_event_per_1k_output_s: float | None = None
    first_event_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    hedge_after_s: float | None = None


# Models that reason before their first visible token (a streamed answer included): minutes
# are normal, so they get a longer first-event allowance than the rest.
REASONING_MODELS = ["gpt-5*", "o1*", "o3*", "o4*", "deepseek-reasoner", "gemini-2.5-pro"]


def _reasoning_override() -> list[AttemptOverride]:
    return [
        AttemptOverride(
            models=list(REASONING_MODELS), first_event_base_s=120.0, first_event_timeout_s=600.0
        )
    ]


@dataclass
class AttemptConfig:
    """``[resilience.attempt]``: how long one attempt may wait for its first event, derived
    from the prompt (``calls/timeouts.py``), and the hedged attempt (``calls/hedge.py``).

    The first-event limit of an attempt is ``first_event_base_s`` + ``first_event_per_1k_prompt_s``
    per 1,000 prompt tokens (+ ``first_event_per_1k_output_s`` per 1,000 ``max_output_tokens``
    when the call does not stream), at most ``resilience.first_event_timeout_s``."""

    # Connection, vendor queueing and a short prefill: a healthy vendor's first token for a
    # short prompt comes within a second or two, its slow tail within several; 20 s is far
    # past that, so a timeout says "hung", not "busy".
    first_event_base_s: float = 20.0
    # Prefill: assumes at worst 5,000 prompt tokens/s (vendors run far faster); a 100K-token
    # prompt gets 20 s more.
    first_event_per_1k_prompt_s: float = 0.2
    # A non-streaming answer's first byte comes once it has all been generated: assumes at
    # worst 20 output tokens/s, over the whole max_output_tokens.
    first_event_per_1k_output_s: float = 50.0
    # > 0: a second attempt when the first has sent no event after this many seconds, the
    # first to answer wins (the other is closed). Doubles upstream spend for those calls.
    hedge_after_s: float = 0.0
    overrides: list[AttemptOverride] = field(default_factory=_reasoning_override)


FALLBACK_TRIGGERS = ("circuit_open", "rate_limited", "upstream_error", "context_overflow")


@dataclass
class FallbackChainConfig:
    """``[[resilience.fallback]]``: where a call goes when its model cannot answer. Entries are
    "upstream" (the same model there, else the first of its ``models`` that fits) or
    "upstream/model", tried in order. A chain for a ``model`` wins over one for its upstream."""

    chain: list[str]
    upstream: str = ""  # the chain of this upstream's calls...
    model: str = ""  # ...or of this model's (on ``upstream``, or on any when it is "")
    on: list[str] = field(default_factory=lambda: list(FALLBACK_TRIGGERS))


@dataclass
class ResilienceConfig:
    """Rate limits, circuit breakers, retries, timeouts and shared-state failover."""

    max_limit_wait_s: float = 60.0  # longest wait for a rate limit (the deadline may cut it)
    min_call_s: float = 0.5  # a rate-limit wait or retry backoff leaves the call this much time
    upstream_limits_per_model: bool = False  # upstream buckets per (upstream, model)
    throttle_default_s: float = 1.0  # hold after a vendor 429 that says nothing about when
    throttle_max_s: float = 60.0  # the longest hold a 429 may ask for
    # Per attempt: the ceiling of the first-event limit derived in [resilience.attempt]
    # (0: no first-event limit but the deadline).
    first_event_timeout_s: float = 300.0
    idle_timeout_s: float = 60.0  # per attempt: longest gap between streamed events (0: none)
    fail_open: bool = True  # Redis down: use local state (True) or refuse calls (False)
    redis_timeout_s: float = 0.25  # per Redis operation of the cache, limits, breakers, budgets
    redis_retry_s: float = 1.0  # after a Redis failure, local state for this long, then retry
    local_limit_share: float = 1.0  # share of each limit a replica enforces while Redis is down
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    attempt: AttemptConfig = field(default_factory=AttemptConfig)
    fallback: list[FallbackChainConfig] = field(default_factory=list)


def _validate_fallback(cfg: Config) -> None:
    names = {u.name for u in cfg.upstreams}
    chains = [(f"upstreams[{i}].fallback", [u.fallback]) for i, u in enumerate(cfg.upstreams)]
    for i, f in enumerate(cfg.resilience.fallback):
        where = f"resilience.fallback[{i}]"
        if not f.upstream and not f.model:
            raise ConfigError("needs upstream or model (whose calls it is for)", setting=where)
        if f.upstream and f.upstream not in names:
            raise ConfigError(f"unknown upstream {f.upstream!r}", setting=f"{where}.upstream")
        unknown = sorted(set(f.on) - set(FALLBACK_TRIGGERS))
        if unknown:
            raise ConfigError(f"{unknown} not in {list(FALLBACK_TRIGGERS)}", setting=f"{where}.on")
        chains.append((f"{where}.chain", f.chain))
    for where, chain in chains:
        for entry in chain:
            if entry and entry.split("/", 1)[0] not in names:
                raise ConfigError(f"{entry!r}: no upstream of that name", setting=where)


def _validate_attempt(r: ResilienceConfig) -> None:
    a = r.attempt
    tables = [("resilience", r), ("resilience.attempt", a)]
    tables += [(f"resilience.attempt.overrides[{i}]", o) for i, o in enumerate(a.overrides)]
    for where, table in tables:
        for name in _ATTEMPT_SECONDS:
            value = getattr(table, name, None)
            if value is not None and value < 0:
                raise ConfigError(f"{where}.{name} must not be negative")


_ATTEMPT_SECONDS = (
    "first_event_base_s",
    "first_event_per_1k_prompt_s",
    "first_event_per_1k_output_s",
    "first_event_timeout_s",
    "idle_timeout_s",
    "hedge_after_s",
)


def _validate_resilience(r: ResilienceConfig) -> None:
    b = r.breaker
    if b.window not in ("count", "time"):
        raise ConfigError(f"resilience.breaker.window: {b.window!r} is not 'count' or 'time'")
    for name in ("window_size", "min_calls", "half_open_calls"):
        if getattr(b, name) < 1:
            raise ConfigError(f"resilience.breaker.{name} must be at least 1")
    for name in ("failure_rate", "slow_call_rate"):
        if not 0 < getattr(b, name) <= 1:
            raise ConfigError(f"resilience.breaker.{name} must be in (0, 1]")
    if b.open_backoff < 1 or b.open_max_s < b.open_s:
        raise ConfigError("resilience.breaker: open_backoff >= 1 and open_max_s >= open_s")
    if r.retry.max_attempts < 1 or not 0 <= r.retry.budget_ratio <= 1:
        raise ConfigError("resilience.retry: max_attempts >= 1, budget_ratio in [0, 1]")
    if r.concurrency.min < 1 or not 0 < r.concurrency.backoff < 1:
        raise ConfigError("resilience.concurrency: min >= 1, backoff in (0, 1)")
    if not 0 < r.local_limit_share <= 1:
        raise ConfigError("resilience.local_limit_share must be in (0, 1]")
    _validate_attempt(r)


# --- end resilience ---


# The last step of a setting's path: ``.name`` or ``[index]``.
_LAST_STEP = re.compile(r"(?:\.[a-z0-9_]+|\[[^\]]*\])$")
# A message that begins with the setting it is about: "cache.ttl_s must be positive".
_LEADING_SETTING = re.compile(r"([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+|\[\d+\])*)(?::\s+|\s+)(?=\S)")


@dataclass
class Origins:
    """Where each setting was given: ``in <file>``, an environment variable, a flag."""

    given: dict[str, str] = field(default_factory=dict)  # setting path -> source

    def note(self, setting: str, source: str) -> None:
        self.given[setting] = source

    def source(self, setting: str) -> str:
        """Where ``setting``, or the table or list it is in, was given; for a table, where the
        settings in it were; "default" for none."""
        path = setting
        while path:
            if path in self.given:
                return self.given[path]
            path = _LAST_STEP.sub("", path) if _LAST_STEP.search(path) else ""
        within = {s for k, s in self.given.items() if k.startswith((setting + ".", setting + "["))}
        return ", ".join(sorted(within)) or "default"

    def locate(self, err: ConfigError) -> ConfigError:
        """``err`` with the source of its setting (for a message that begins with a setting's
        path, that setting's)."""
        if err.source:
            return err
        if not err.setting:
            m = _LEADING_SETTING.match(err.why)
            if m is None or not _is_setting(m.group(1)):
                return err
            err.setting, err.why = m.group(1), err.why[m.end() :]
        source = self.source(err.setting)
        if source != "default" or _is_setting(err.setting):
            err.source = source
        return err


@dataclass
class Config:
    """Everything the gateway reads at start-up."""

    listen: str = "127.0.0.1:50051"
    default_model: str = "gpt-4.1-mini"
    default_vendor: str = ""
    # Shared state across replicas: redis://host:port/db (rediss:// for TLS) for one node,
    # redis+cluster://host:port[,host:port...] for a Redis Cluster (the nodes to start from),
    # redis+sentinel://host:port[,host:port...]/service[/db] for a master found through
    # Sentinel (state/redis.py).
    redis_url: str = ""
    # Readiness falls (NOT_SERVING) while Redis is unreachable. Off by default: without Redis
    # the gateway serves from in-process state (per-replica limits, breakers and cache), which
    # beats refusing; an operator whose limits or budgets must hold across replicas sets it,
    # so balancers send traffic to replicas that reach Redis. Needs redis_url.
    redis_required: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    sandbox: EmbeddedSandboxConfig = field(default_factory=EmbeddedSandboxConfig)
    upstreams: list[UpstreamConfig] = field(default_factory=list)
    tenants: list[TenantConfig] = field(default_factory=list)
    models: list[CatalogOverride] = field(default_factory=list)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)

    @property
    def auth_enabled(self) -> bool:
        """Auth is on exactly when tenants are configured (off for local use)."""
        return bool(self.tenants)

    @property
    def use_sandbox(self) -> bool:
        if self.sandbox.enabled is None:
            return not self.upstreams
        return self.sandbox.enabled

    # Not a setting: where load_config found each one, to name it in an error at start-up.
    origins: Origins = field(default_factory=Origins, init=False, repr=False, compare=False)


# Upstreams configured from the usual vendor environment variables when the file names none.
_WELL_KNOWN = (
    ("openai", VendorKind.OPENAI, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ("anthropic", VendorKind.ANTHROPIC, "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    ("deepseek", VendorKind.OPENAI_COMPATIBLE, "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    ("moonshot", VendorKind.OPENAI_COMPATIBLE, "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY"),
    (
        "gemini",
        VendorKind.OPENAI_COMPATIBLE,
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "GEMINI_API_KEY",
    ),
)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Builds the config from defaults, the TOML file (if any) and the environment."""
    env = os.environ if env is None else env
    origins = Origins()
    try:
        cfg = _load(path, env, origins)
    except ConfigError as e:
        origins.locate(e)
        raise
    cfg.origins = origins
    return cfg


def _load(path: str | Path | None, env: Mapping[str, str], origins: Origins) -> Config:
    data: dict[str, Any] = {}
    from_env = not path and bool(env.get(ENV_PREFIX + "CONFIG"))
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        data = _read_file(str(path), ENV_PREFIX + "CONFIG" if from_env else "")
        _note_file(data, "", f"in {path}", origins)
    cfg: Config = _build(Config, data, "")
    entries = _apply_env(cfg, env, origins)
    left = _apply_entries(cfg, entries, origins, last=False)
    if not cfg.upstreams:
        named = {e.key for e in left if e.list_name == "upstreams"}
        for n, k, u, e in _WELL_KNOWN:
            if env.get(e) or n in named:
                origins.note(f"upstreams[{len(cfg.upstreams)}]", e)
                cfg.upstreams.append(UpstreamConfig(name=n, kind=k, base_url=u, api_key_env=e))
    _apply_entries(cfg, left, origins, last=True)
    for up in cfg.upstreams:
        if up.api_key_env and not up.api_key:
            up.api_key = env.get(up.api_key_env, "")
    for i, t in enumerate(cfg.tenants):
        if t.api_keys_env and not t.api_keys:
            t.api_keys = [k.strip() for k in env.get(t.api_keys_env, "").split(",") if k.strip()]
        if not t.api_keys:
            where = f"{t.api_keys_env} is unset or empty" if t.api_keys_env else "set api_keys_env"
            raise ConfigError(f"{t.name!r} has no API keys: {where}", setting=f"tenants[{i}]")
    _validate(cfg)
    _check_usable(cfg)
    return cfg


def _read_file(path: str, source: str) -> dict[str, Any]:
    where = f"config file {path}"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(
            f"cannot read it: {e.strerror or e}", setting=where, source=source
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", setting=where, source=source) from None


def _note_file(data: Mapping[str, Any], prefix: str, source: str, origins: Origins) -> None:
    for key, value in data.items():
        if isinstance(value, Mapping):
            _note_file(value, f"{prefix}{key}.", source, origins)
        else:
            origins.note(prefix + key, source)


def _validate(cfg: Config) -> None:
    names = [u.name for u in cfg.upstreams]
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be unique: {names}", setting="upstreams")
    if cfg.tls.client_ca_file and not cfg.tls.enabled:
        raise ConfigError("tls.client_ca_file needs tls.cert_file and tls.key_file")
    if not 0 < cfg.telemetry.sampling_ratio <= 1:
        raise ConfigError("telemetry.sampling_ratio must be in (0, 1]")
    cfg.cache.validate()
    cfg.admission.validate()
    if cfg.server.drain_delay_s < 0 or cfg.server.grace_s < 0:
        raise ConfigError("server.drain_delay_s and server.grace_s must not be negative")
    if cfg.server.http_client not in ("", "lean", "httpx"):
        raise ConfigError(f"server.http_client: {cfg.server.http_client!r} is not lean or httpx")
    if cfg.server.http_client:
        log.warning("server.http_client is ignored: upstream calls always use httpx")
    for name in (
        "max_connection_age_s",
        "max_connection_age_grace_s",
        "max_connection_age_ms",
        "liveness_block_s",
    ):
        if getattr(cfg.server, name) < 0:
            raise ConfigError("must not be negative (0: off)", setting=f"server.{name}")
    if cfg.server.readiness_interval_s <= 0:
        raise ConfigError("must be positive", setting="server.readiness_interval_s")
    if cfg.redis_required and not cfg.redis_url:
        raise ConfigError("needs redis_url", setting="redis_required")
    if cfg.server.event_loop not in EVENT_LOOPS:
        raise ConfigError(
            f"{cfg.server.event_loop!r} is not one of {', '.join(EVENT_LOOPS)}",
            setting="server.event_loop",
        )
    gc_thresholds = cfg.server.gc_thresholds
    if len(gc_thresholds) > 3 or any(t < 0 for t in gc_thresholds):
        raise ConfigError(
            f"{gc_thresholds} is not up to three thresholds of 0 or more (gc.set_threshold)",
            setting="server.gc_thresholds",
        )
    if cfg.server.upstream_max_connections < 0:
        raise ConfigError("server.upstream_max_connections must be 0 (no cap) or positive")
    for name in (
        "max_document_chars",
        "max_document_tokens",
        "max_instruction_chars",
        "max_history_turns",
        "max_history_chars",
        "default_chunk_tokens",
    ):
        if getattr(cfg.limits, name) <= 0:
            raise ConfigError("must be positive", setting=f"limits.{name}")
    if cfg.server.max_message_bytes < 0:
        raise ConfigError(
            "must be 0 (from the limits) or positive", setting="server.max_message_bytes"
        )
    _validate_resilience(cfg.resilience)
    _validate_fallback(cfg)


# UTF-8 needs at most 4 bytes a character; the request's other fields (names, options,
# labels, stop sequences, each bounded in api/convert.py) fit in the margin.
_UTF8_MAX = 4
_FIELDS_MARGIN = 1024 * 1024


def request_bytes_limit(cfg: Config) -> int:
    """The largest request the gateway takes: ``server.max_message_bytes``, or (0) enough for
    every character limit filled with 4-byte characters, so that the limits in characters
    hold whatever the script."""
    if cfg.server.max_message_bytes:
        return cfg.server.max_message_bytes
    lim = cfg.limits
    chars = lim.max_document_chars + 2 * lim.max_instruction_chars + lim.max_history_chars
    return _UTF8_MAX * chars + _FIELDS_MARGIN


def _check_usable(cfg: Config) -> None:
    """What the settings point at, checked now: gRPC, Redis or the exporters would fail on
    it later without naming the setting."""
    tls = cfg.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        given, other = ("cert_file", "key_file") if tls.cert_file else ("key_file", "cert_file")
        raise ConfigError(f"needs tls.{other} as well", setting=f"tls.{given}")
    if tls.enabled:
        try:
            preflight.tls_files(tls.cert_file, tls.key_file, tls.client_ca_file)
        except preflight.Unusable as e:
            raise ConfigError(e.why, setting=f"tls.{e.what}") from None
    checks = (
        ("listen", cfg.listen, preflight.split_listen),
        ("http.listen", cfg.http.listen, _http_listen),
        ("redis_url", cfg.redis_url, preflight.check_redis_url),
        ("telemetry.otlp_endpoint", cfg.telemetry.otlp_endpoint, preflight.check_otlp_endpoint),
    )
    for setting, value, check in checks:
        if value:
            try:
                check(value)
            except preflight.Unusable as e:
                raise ConfigError(e.why, setting=setting) from None
    for setting, port in (
        ("telemetry.prometheus_port", cfg.telemetry.prometheus_port),
        ("sandbox.port", cfg.sandbox.port),
    ):
        if port > 65535:
            raise ConfigError(f"{port} is not a port (0 to 65535)", setting=setting)


def _http_listen(address: str) -> None:
    if preflight.split_listen(address) is None:
        raise preflight.Unusable("address", f"{address!r}: the HTTP listener takes host:port")


def _fields(cls: type[Any]) -> dict[str, Any]:
    """The settings of a config table: its fields' types, without those load_config fills."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _table_of_list(tp: Any) -> type[Any] | None:
    """``X`` for ``list[X]`` where X is a table, else None."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return item
    return None


def _is_setting(path: str) -> bool:
    tp: Any = Config
    for part in re.sub(r"\[[^\]]*\]", "", path).split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return False
        fields = _fields(tp)
        if part not in fields:
            return False
        tp = _table_of_list(fields[part]) or fields[part]
    return True


def _build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    """Builds dataclass ``cls`` from a TOML table, rejecting unknown keys."""
    if not isinstance(data, Mapping):
        raise ConfigError("expected a table", setting=where.rstrip(".") or "config")
    hints = _fields(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        also = f" (nor {', '.join(unknown[1:])})" if unknown[1:] else ""
        raise ConfigError(f"unknown setting{also}", setting=where + unknown[0])
    missing = [
        f.name for f in dataclasses.fields(cls) if f.name not in data and f.init and _required(f)
    ]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}", setting=where.rstrip(".") or "config")
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError("expected a list", setting=where)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".")
    if isinstance(tp, type) and issubclass(tp, VendorKind):
        try:
            return VendorKind(value)
        except ValueError:
            kinds = [k.value for k in VendorKind]
            raise ConfigError(f"{value!r} is not one of {kinds}", setting=where) from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f"expected {tp.__name__}, got {value!r}", setting=where)
    return value


def _parse_env(tp: Any, text: str, where: str) -> Any:
    """The value of a scalar setting, or a list of them, from a variable's text."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if text.lower() in ("", "none", "auto") else _parse_env(args[0], text, where)
    if origin is list:
        if text.lstrip().startswith("["):
            return _convert(tp, _json(text, where, "a JSON array"), where)
        (item,) = typing.get_args(tp)
        parts = [s.strip() for s in text.split(",") if s.strip()]
        return [_parse_env(item, part, f"{where}[{i}]") for i, part in enumerate(parts)]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _convert(tp, text, where)
    try:
        if tp is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp in (int, float, str):
            return tp(text)
    except ValueError:
        raise ConfigError(f"cannot parse {text!r} as {tp.__name__}", setting=where) from None
    raise ConfigError("cannot be set from the environment", setting=where)


def _json(text: str, where: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # Not the text itself: it may hold an API key.
        why = f"expected {expected}: {e.msg} at line {e.lineno} column {e.colno}"
        raise ConfigError(why, setting=where) from None


def _merge(table: Any, data: Any, where: str) -> None:
    """Sets the keys of a JSON object on a config table (and on the tables within it)."""
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", setting=where)
    fields = _fields(type(table))
    for key, value in data.items():
        if key not in fields:
            raise ConfigError("unknown setting", setting=f"{where}.{key}")
        current = getattr(table, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _merge(current, value, f"{where}.{key}")
        else:
            setattr(table, key, _convert(fields[key], value, f"{where}.{key}"))


@dataclass
class _Entry:
    """The ``LONGREAD_<LIST>__<NAME>__<SETTING>`` variables of one named entry of a list."""

    list_name: str  # "upstreams"
    table: type[Any]
    key: str  # the name as the variables spell it, in lower case
    values: dict[str, tuple[str, str]] = field(default_factory=dict)  # setting -> var, text


def _apply_env(cfg: Config, env: Mapping[str, str], origins: Origins) -> list[_Entry]:
    """Applies the ``LONGREAD_*`` variables but those of named entries, which it returns."""
    entries: dict[tuple[str, str], _Entry] = {}
    ours = [k for k in env if k.startswith(ENV_PREFIX) and k not in _CLIENT_ENV]
    # A whole table before the settings in it, so that the narrower variable wins.
    for var in sorted(ours, key=lambda k: (k.count("__"), k)):
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        table: Any = cfg
        setting = ""
        for i, part in enumerate(parts):
            fields = _fields(type(table))
            path = f"{setting}.{part}" if setting else part
            if part not in fields:
                if i == 0:
                    # Not ours, e.g. the LONGREAD_PORT that Kubernetes sets for a Service
                    # named longread.
                    log.warning("ignoring unknown setting %s", var)
                    break
                raise ConfigError("unknown setting", setting=path, source=var)
            setting, tp, rest = path, fields[part], parts[i + 1 :]
            if not rest:
                origins.note(setting, var)
                _set_from_env(table, part, tp, env[var], setting)
                break
            item = _table_of_list(tp)
            if item is not None:
                _collect_entry(entries, setting, item, rest, var, env[var])
                break
            table = getattr(table, part)
            if not dataclasses.is_dataclass(table):
                raise ConfigError("has no settings under it", setting=setting, source=var)
    return list(entries.values())


def _set_from_env(table: Any, name: str, tp: Any, text: str, setting: str) -> None:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _merge(getattr(table, name), _json(text, setting, "a JSON object"), setting)
    elif _table_of_list(tp) is not None:
        value = _json(text, setting, "a JSON array of objects")
        setattr(table, name, _convert(tp, value, setting))
    else:
        setattr(table, name, _parse_env(tp, text, setting))


def _collect_entry(
    entries: dict[tuple[str, str], _Entry],
    setting: str,
    table: type[Any],
    rest: list[str],
    var: str,
    text: str,
) -> None:
    whole = ENV_PREFIX + setting.upper()
    if "name" not in _fields(table):
        raise ConfigError(
            f"its entries have no name: give the whole list as JSON in {whole}",
            setting=setting,
            source=var,
        )
    if len(rest) != 2 or not rest[0]:
        raise ConfigError(f"expected {whole}__<NAME>__<SETTING>", setting=setting, source=var)
    key, name = rest
    if name not in _fields(table):
        raise ConfigError("unknown setting", setting=f"{setting}[{key}].{name}", source=var)
    entry = entries.setdefault((setting, key), _Entry(setting, table, key))
    entry.values[name] = (var, text)


def _env_key(name: str) -> str:
    """A name as a variable spells it (in lower case): ``my-llm`` is ``MY_LLM``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower())


def _apply_entries(
    cfg: Config, entries: list[_Entry], origins: Origins, *, last: bool
) -> list[_Entry]:
    """Sets the variables of each entry on the entry of that name, or adds the entry when
    they give what it needs; returns the others, which are errors when ``last``."""
    left = []
    for e in entries:
        items: list[Any] = getattr(cfg, e.list_name)
        found = [i for i, item in enumerate(items) if _env_key(item.name) == e.key]
        first_var = min(var for var, _ in e.values.values())
        if len(found) > 1:
            names = [items[i].name for i in found]
            why = f"names {names} are spelt alike in variables: rename one"
            raise ConfigError(why, setting=f"{e.list_name}[{e.key}]", source=first_var)
        index = found[0] if found else len(items)
        if not found:
            required = [
                f.name
                for f in dataclasses.fields(e.table)
                if f.init and _required(f) and f.name not in e.values and f.name != "name"
            ]
            if required and not last:
                left.append(e)
                continue
            if required:
                prefix = f"{ENV_PREFIX}{e.list_name.upper()}__{e.key.upper()}__"
                also = " and ".join(prefix + r.upper() for r in required)
                why = f"no entry named {e.key!r}: to add one, set {also}"
                raise ConfigError(why, setting=f"{e.list_name}[{e.key}]", source=first_var)
        hints = _fields(e.table)
        values = {}
        for name, (var, text) in sorted(e.values.items()):
            setting = f"{e.list_name}[{index}].{name}"
            origins.note(setting, var)
            values[name] = _parse_env(hints[name], text, setting)
        if found:
            for name, value in values.items():
                setattr(items[index], name, value)
        else:
            items.append(e.table(**{"name": e.key, **values}))
    return left
