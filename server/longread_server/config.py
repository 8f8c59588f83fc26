"""Typed configuration: defaults, then a TOML file, then ``LONGREAD_*`` environment variables.

Environment variables name a field by its path with ``__`` between levels, e.g.
``LONGREAD_LISTEN=0.0.0.0:50051`` or ``LONGREAD_SERVER__GRACE_S=10``. Values are parsed by the
field's type (lists as comma-separated text). Upstreams, tenants and catalog overrides are
lists of tables and come from the file only; API keys are read from the environment variable
each upstream or tenant names, never stored in the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longread_server.domain import VendorKind

ENV_PREFIX = "LONGREAD_"
# Read by the client and CLI, not by the server.
_CLIENT_ENV = frozenset({"LONGREAD_CONFIG", "LONGREAD_TARGET", "LONGREAD_API_KEY"})
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


@dataclass
class ServerConfig:
    """gRPC server options."""

    max_message_bytes: int = 16 * 1024 * 1024  # a 1M-token document is ~4-8 MB of text
    grace_s: float = 15.0  # graceful drain on SIGTERM
    keepalive_time_ms: int = 20_000
    keepalive_timeout_ms: int = 10_000
    max_connection_age_ms: int = 0  # 0: unlimited
    max_concurrent_rpcs: int = 0  # 0: unlimited
    reflection: bool = True
    # Open connections to upstreams, all of them together (0: no cap). A call that finds
    # them all busy waits for one, within its own deadline (vendors/transport.py).
    upstream_max_connections: int = 1000
    # Chose between two upstream clients; there is one now (httpx). Still accepted, with a
    # warning, so configs written for older versions load.
    http_client: str = ""


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
    fallback: str = ""  # another upstream to use while this one's circuit is open
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
    api_keys: list[str] = field(default_factory=list)  # resolved at load time


@dataclass
class LimitsConfig:
    """Request limits."""

    max_document_chars: int = 8_000_000
    max_document_tokens: int = 2_000_000
    max_instruction_chars: int = 100_000
    default_output_tokens: int = 2048  # single pass and reduce calls
    map_output_tokens: int = 1024  # each map call
    default_chunk_tokens: int = 16_000  # chunk size when the document does not fit one call
    max_chunks: int = 2048


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

    def validate(self) -> None:
        for name in ("max_bytes", "ttl_s", "max_ttl_s", "max_entry_bytes", "lock_ttl_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cache.{name} must be positive")
        if self.flight_wait_s < 0:
            raise ConfigError("cache.flight_wait_s must not be negative")


@dataclass
class TelemetryConfig:
    """OpenTelemetry traces and metrics, and logs. Everything that costs is off by default."""

    traces: bool = False
    metrics: bool = False
    otlp_endpoint: str = ""  # e.g. "http://collector:4317": traces and metrics over OTLP/gRPC
    sampling_ratio: float = 1.0  # of new traces; a caller's sampled traceparent is honoured
    record_content: bool = False  # documents, prompts and answers on spans (opt-in)
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


@dataclass
class Config:
    """Everything the gateway reads at start-up."""

    listen: str = "127.0.0.1:50051"
    default_model: str = "gpt-4.1-mini"
    default_vendor: str = ""
    redis_url: str = ""
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
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
    data: dict[str, Any] = {}
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
    cfg: Config = _build(Config, data, "")
    _apply_env(cfg, env)
    if not cfg.upstreams:
        cfg.upstreams = [
            UpstreamConfig(name=n, kind=k, base_url=u, api_key_env=e)
            for n, k, u, e in _WELL_KNOWN
            if env.get(e)
        ]
    for up in cfg.upstreams:
        if up.api_key_env:
            up.api_key = env.get(up.api_key_env, "")
    for t in cfg.tenants:
        if t.api_keys_env:
            t.api_keys = [k.strip() for k in env.get(t.api_keys_env, "").split(",") if k.strip()]
        if not t.api_keys:
            raise ConfigError(f"tenant {t.name!r}: no API keys (set {t.api_keys_env or '?'})")
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    names = [u.name for u in cfg.upstreams]
    if len(set(names)) != len(names):
        raise ConfigError(f"upstream names must be unique: {names}")
    if cfg.tls.client_ca_file and not cfg.tls.enabled:
        raise ConfigError("tls.client_ca_file needs tls.cert_file and tls.key_file")
    if not 0 < cfg.telemetry.sampling_ratio <= 1:
        raise ConfigError("telemetry.sampling_ratio must be in (0, 1]")
    cfg.cache.validate()
    if cfg.server.http_client not in ("", "lean", "httpx"):
        raise ConfigError(f"server.http_client: {cfg.server.http_client!r} is not lean or httpx")
    if cfg.server.http_client:
        log.warning("server.http_client is ignored: upstream calls always use httpx")
    if cfg.server.upstream_max_connections < 0:
        raise ConfigError("server.upstream_max_connections must be 0 (no cap) or positive")
    for name in ("max_document_chars", "max_document_tokens", "default_chunk_tokens"):
        if getattr(cfg.limits, name) <= 0:
            raise ConfigError(f"limits.{name} must be positive")
    _validate_resilience(cfg.resilience)


def _build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    """Builds dataclass ``cls`` from a TOML table, rejecting unknown keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: unknown keys {sorted(unknown)}")
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {e}") from e


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".")
    if isinstance(tp, type) and issubclass(tp, VendorKind):
        try:
            return VendorKind(value)
        except ValueError:
            kinds = [k.value for k in VendorKind]
            raise ConfigError(f"{where}: {value!r} is not one of {kinds}") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _parse_env(tp: Any, text: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if text.lower() in ("", "none", "auto") else _parse_env(args[0], text, where)
    if origin is list:
        return [s.strip() for s in text.split(",") if s.strip()]
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
        raise ConfigError(f"{where}: cannot parse {text!r} as {tp.__name__}") from None
    raise ConfigError(f"{where}: cannot be set from the environment")


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    for key, text in env.items():
        if not key.startswith(ENV_PREFIX) or key in _CLIENT_ENV:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        target: Any = cfg
        for part in path[:-1]:
            target = getattr(target, part, None)
        name = path[-1]
        if not dataclasses.is_dataclass(target) or name not in {
            f.name for f in dataclasses.fields(target)
        }:
            log.warning("ignoring unknown setting %s", key)
            continue
        tp = typing.get_type_hints(type(target))[name]
        setattr(target, name, _parse_env(tp, text, key))
