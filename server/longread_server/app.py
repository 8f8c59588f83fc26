"""Wiring and serving: config -> adapters -> pipeline -> runner -> RPCs -> the gRPC servicer on
a grpc.aio server and, when ``http.listen`` is set, the Connect face on an HTTP listener."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health

from longread_server import preflight
from longread_server.api.admission import Admission, LoopLag
from longread_server.api.auth import Authenticator
from longread_server.api.connect import connect_app
from longread_server.api.health import LIVENESS, SERVING, LoopWatchdog, Readiness
from longread_server.api.http import HttpServer, http_app, page
from longread_server.api.registry import register
from longread_server.api.rpcs import AnalysisRpcs
from longread_server.api.servicer import AnalysisServicer
from longread_server.calls.budget import BudgetLedger, BudgetStage
from longread_server.calls.cache import (
    ResponseCache,
    build_response_cache,
    observe_cache,
)
from longread_server.calls.pipeline import Pipeline, UnknownUpstream
from longread_server.calls.resilience import Resilience, build_resilience, redis_gate
from longread_server.calls.stages import pipeline_stages
from longread_server.config import (
    Config,
    ConfigError,
    UpstreamConfig,
    load_config,
    request_bytes_limit,
)
from longread_server.domain import ModelInfo, Operation, VendorKind
from longread_server.embedded_sandbox import EmbeddedSandbox, start_sandbox
from longread_server.plan.catalog import Catalog
from longread_server.plan.encodings import EncodingMemo
from longread_server.plan.planner import PlanDefaults
from longread_server.plan.tokenizers import get_tokenizer
from longread_server.run.analysis import Analysis
from longread_server.run.models import ModelResolver
from longread_server.run.planning import Planning
from longread_server.run.runner import JobRunner, PromptCaching
from longread_server.run.semantic import SemanticReuse, UpstreamEmbedder
from longread_server.semantic.local_model import Embedder, LocalEmbedder
from longread_server.state.gate import RedisGate
from longread_server.state.redis import RedisClient, connect, warm_up
from longread_server.state.semantic_store import RedisSemanticStore
from longread_server.telemetry import Telemetry, configure_logging
from longread_server.telemetry import setup as setup_telemetry
from longread_server.vendors import make_adapter
from longread_server.vendors.peer import Peer
from longread_server.vendors.transport import UpstreamHttp, upstream_client

log = logging.getLogger("longread")

# After the grace period's cut, the time left for the cut RPCs to send their statuses.
_CUT_WRITE_S = 0.5

# The upstream names the built-in sandbox stands in for, with the protocol each speaks.
_SANDBOX_UPSTREAMS = (
    ("openai", VendorKind.OPENAI),
    ("anthropic", VendorKind.ANTHROPIC),
    ("deepseek", VendorKind.OPENAI_COMPATIBLE),
    ("moonshot", VendorKind.OPENAI_COMPATIBLE),
    ("gemini", VendorKind.OPENAI_COMPATIBLE),
)


# gRPC's message length options are 32-bit signed integers.
_GRPC_MAX_LENGTH = 2**31 - 1


def sandbox_upstreams(base_url: str) -> list[UpstreamConfig]:
    """Upstreams that send every vendor's traffic to a sandbox at ``base_url``."""
    return [
        UpstreamConfig(
            name=name,
            kind=kind,
            base_url=base_url if kind is VendorKind.ANTHROPIC else base_url + "/v1",
            api_key="sandbox",
        )
        for name, kind in _SANDBOX_UPSTREAMS
    ]


def build_catalog(cfg: Config) -> Catalog:
    overrides = [
        ModelInfo(
            vendor=m.vendor,
            model=m.model,
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            input_per_mtok=m.input_per_mtok,
            output_per_mtok=m.output_per_mtok,
            cached_input_per_mtok=m.cached_input_per_mtok,
            cache_write_per_mtok=m.cache_write_per_mtok,
            cache_write_1h_per_mtok=m.cache_write_1h_per_mtok,
            cache_min_tokens=m.cache_min_tokens,
            prompt_cache_retention=m.prompt_cache_retention,
            tokenizer=m.tokenizer,
            tokens_exact=m.tokens_exact,
        )
        for m in cfg.models
    ]
    return Catalog.builtin(overrides)


def build_analysis(
    cfg: Config,
    catalog: Catalog,
    runner: JobRunner,
    ledger: BudgetLedger,
    tel: Telemetry | None = None,
) -> Analysis:
    """The service behind the RPCs, for the configured upstreams, models and limits."""
    limits = cfg.limits
    models = ModelResolver(
        catalog,
        {u.name: tuple(u.models) for u in cfg.upstreams},
        cfg.default_model,
        cfg.default_vendor,
    )
    defaults = PlanDefaults(
        output_tokens=limits.default_output_tokens,
        map_output_tokens=limits.map_output_tokens,
        chunk_tokens=limits.default_chunk_tokens,
        max_chunks=limits.max_chunks,
    )
    planning = Planning(models, defaults, limits.max_document_tokens)
    concurrency = {u.name: u.max_concurrency for u in cfg.upstreams}
    return Analysis(planning, runner, ledger, concurrency, tel)


def build_semantic(
    cfg: Config,
    pipeline: Pipeline,
    redis: RedisClient | None = None,
    gate: RedisGate | None = None,
    tel: Telemetry | None = None,
) -> SemanticReuse:
    """Semantic reuse, for the tenants and requests that ask for it: the offline model, or
    the configured upstream's embeddings; shared through Redis when the cache is."""
    sem = cfg.cache.semantic
    upstream = None
    local: Callable[[], Embedder] | None = None
    if sem.embeddings == "local":
        if importlib.util.find_spec("wordllama") is not None:
            local = LocalEmbedder.load
        elif any(t.semantic_cache for t in cfg.tenants):
            raise ConfigError(
                "semantic reuse with the local model needs the 'semantic' extra",
                setting="cache.semantic.embeddings",
                hint="pip install 'longread[semantic]'",
            )
    else:
        if importlib.util.find_spec("numpy") is None:
            raise ConfigError(
                "semantic reuse needs the 'semantic' extra (numpy)",
                setting="cache.semantic.embeddings",
                hint="pip install 'longread[semantic]'",
            )
        try:
            serves_embeddings = pipeline.serves(sem.embeddings, Operation.EMBEDDING)
        except UnknownUpstream:
            raise ConfigError(
                f"no upstream named {sem.embeddings!r}", setting="cache.semantic.embeddings"
            ) from None
        if not serves_embeddings:
            raise ConfigError(
                f"{sem.embeddings!r} has no embeddings endpoint (it is not OpenAI-compatible)",
                setting="cache.semantic.embeddings",
            )
        upstream = UpstreamEmbedder(pipeline, sem.embeddings, sem.embedding_model)
    remote = None
    if redis is not None and gate is not None and cfg.cache.redis:
        remote = RedisSemanticStore(redis, cfg.cache.redis_prefix)
    return SemanticReuse(
        sem,
        cfg.cache,
        frozenset(t.name for t in cfg.tenants if t.semantic_cache),
        local=local,
        upstream=upstream,
        remote=remote,
        gate=gate if remote is not None else None,
        telemetry=tel,
    )


@dataclass
class Gateway:
    """A running gateway: its gRPC server and what it owns."""

    cfg: Config
    server: grpc.aio.Server
    port: int
    http: UpstreamHttp
    health: health.aio.HealthServicer
    telemetry: Telemetry
    sandbox: EmbeddedSandbox | None = None
    redis: RedisClient | None = None  # shared by every piece of replicated state
    cache: ResponseCache | None = None  # response cache + single-flight (stats)
    resilience: Resilience | None = None  # rate limits, breakers, retries (state, stats)
    ledger: BudgetLedger | None = None  # tenants' monthly spend
    encodings: EncodingMemo | None = None  # recent long documents' encodings
    admission: Admission | None = None  # the AnalysisService's RPCs: limit, shares, drain
    loop_lag: LoopLag | None = None  # what the admission limit is steered by
    readiness: Readiness | None = None  # health "" and the AnalysisService
    watchdog: LoopWatchdog | None = None  # health "liveness"
    http_listener: HttpServer | None = None  # Connect and gRPC-Web (http.listen)

    @property
    def http_port(self) -> int:
        """The HTTP listener's port (0: there is none)."""
        return self.http_listener.port if self.http_listener is not None else 0

    async def stop(self, grace: float | None = None) -> None:
        """Drains. Health says NOT_SERVING at once, and keeps answering so to the end (the
        server stops accepting RPCs only when the drain is over); new RPCs are served for
        ``server.drain_delay_s``, then refused with DRAINING; in-flight RPCs get ``grace``
        seconds, and those still running are then ended with UNAVAILABLE and DRAINING."""
        grace = self.cfg.server.grace_s if grace is None else grace
        if self.readiness is not None:
            await self.readiness.drain()
        else:
            await self.health.enter_graceful_shutdown()
        adm = self.admission
        if adm is not None:
            if self.cfg.server.drain_delay_s > 0:
                await asyncio.sleep(self.cfg.server.drain_delay_s)
            adm.close()
            if not await adm.drained(grace):
                log.warning("drain: grace period over, ending %d RPCs", adm.cut())
                await adm.drained(_CUT_WRITE_S)
            grace = _CUT_WRITE_S  # for what remains: health watches, reflection
        await self.server.stop(grace)
        if self.http_listener is not None:
            await self.http_listener.stop(grace)
        if self.watchdog is not None:
            await asyncio.to_thread(self.watchdog.stop)
        if self.loop_lag is not None:
            self.loop_lag.stop()
        if self.cache is not None:
            await self.cache.aclose()
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        self.telemetry.shutdown()
        if self.sandbox is not None:
            await self.sandbox.stop()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _server_credentials(cfg: Config) -> grpc.ServerCredentials | None:
    if not cfg.tls.enabled:
        return None
    # Checked again here, not only by load_config: a config may be built in code, and gRPC
    # would report an unusable file only as a failure to bind.
    try:
        files = preflight.tls_files(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.client_ca_file)
    except preflight.Unusable as e:
        raise ConfigError(e.why, setting=f"tls.{e.what}") from None
    return grpc.ssl_server_credentials(
        [(files.key, files.cert)],
        root_certificates=files.client_ca,
        require_client_auth=files.client_ca is not None,
    )


async def start(cfg: Config, telemetry: Telemetry | None = None) -> Gateway:
    """Builds and starts the gateway described by ``cfg`` (``telemetry``: to inject test
    exporters; by default it is built from ``cfg.telemetry``)."""
    tel = telemetry or setup_telemetry(cfg.telemetry)
    sandbox: EmbeddedSandbox | None = None
    if cfg.use_sandbox:
        sandbox = await start_sandbox(cfg.sandbox)
        cfg = replace(cfg, upstreams=[*cfg.upstreams, *sandbox_upstreams(sandbox.base_url)])
        log.warning(
            "no vendor configured: serving from the built-in sandbox at %s", sandbox.base_url
        )

    http = _http_client(cfg)
    adapters = {
        up.name: make_adapter(up.kind, http, name=up.name, base_url=up.base_url, api_key=up.api_key)
        for up in cfg.upstreams
    }
    catalog = build_catalog(cfg)
    # Loading an encoding takes up to ~0.7 s (o200k_base): at start-up, not in the first
    # request that needs it.
    await asyncio.to_thread(_load_tokenizers, catalog)
    redis = connect(cfg.redis_url) if cfg.redis_url else None
    if redis is not None:
        await warm_up(redis)
    # One Redis gate for the cache, budget ledger, rate limits and breakers: one view of its
    # health, so one Redis outage costs one timeout per interval for all of them.
    gate = redis_gate(cfg) if redis is not None else None
    ledger = BudgetLedger(
        {t.name: t.monthly_budget_usd for t in cfg.tenants},
        redis,
        health=gate,
        state_dir=cfg.budget.state_dir or None,
        reservation_margin_s=cfg.budget.reservation_margin_s,
        reservation_lease_s=cfg.budget.reservation_lease_s,
    )
    if ledger.volatile:
        log.warning(
            "tenant budgets are kept in memory only: a restart forgets this month's spend "
            "(set redis_url, or budget.state_dir for a state file)"
        )
    response_cache = build_response_cache(cfg.cache, redis, gate)
    observe_cache(response_cache, tel)
    resilience = build_resilience(cfg, adapters, catalog, redis, telemetry=tel, health=gate)
    stages = pipeline_stages(
        resilience, cache=response_cache, budget=BudgetStage(ledger, catalog), telemetry=tel
    )
    caching = PromptCaching(cfg.cache.vendor_ttl, cfg.cache.vendor_extended_retention)
    peers = {up.name: Peer.of(up.kind, up.base_url, up.provider) for up in cfg.upstreams}
    pipeline = Pipeline(adapters, stages, tel, peers)
    runner = JobRunner(pipeline, tel, resilience.concurrency, caching)
    analysis = build_analysis(cfg, catalog, runner, ledger, tel)
    analysis.semantic = build_semantic(cfg, pipeline, redis, gate, tel)
    if any(t.semantic_cache for t in cfg.tenants):
        await analysis.semantic.load()
    admission = Admission(cfg.admission)
    # One implementation of the RPCs, served by the gRPC servicer and, with http.listen, the
    # Connect face.
    rpcs = AnalysisRpcs(cfg, analysis, Authenticator(cfg.tenants), tel, admission)
    servicer = AnalysisServicer(rpcs, own_span=not cfg.telemetry.grpc_instrumentation)
    if tel.client_spans:
        _instrument_clients(tel, http, redis)

    # gRPC takes requests up to twice the limit, so that the servicer can refuse the ones over
    # it with the limit named (api/convert.py decoder); above that, gRPC refuses on its own.
    max_request = request_bytes_limit(cfg)
    opts = [
        ("grpc.max_receive_message_length", min(2 * max_request, _GRPC_MAX_LENGTH)),
        ("grpc.max_send_message_length", max_request),
        ("grpc.keepalive_time_ms", cfg.server.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", cfg.server.keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.so_reuseport", 0),
    ]
    opts.extend(connection_age_options(cfg))
    # The server span of each RPC is started by the servicer (api/rpc_record.py), or, when asked
    # for, by the OpenTelemetry gRPC instrumentation's interceptor; health checks are not
    # traced either way.
    interceptors = []
    if tel.tracing and cfg.telemetry.grpc_instrumentation:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor
        from opentelemetry.instrumentation.grpc import filters as grpc_filters

        interceptors.append(
            aio_server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=tel.tracer_provider,
                filter_=grpc_filters.negate(grpc_filters.health_check()),
            )
        )
    server = grpc.aio.server(
        interceptors=interceptors,
        options=opts,
        maximum_concurrent_rpcs=cfg.server.max_concurrent_rpcs or None,
    )
    health_servicer = register(
        server, servicer, reflection_on=cfg.server.reflection, max_request_bytes=max_request
    )
    creds = _server_credentials(cfg)
    try:
        if creds is None:
            port = server.add_insecure_port(cfg.listen)
        else:
            port = server.add_secure_port(cfg.listen, creds)
    except RuntimeError:  # gRPC's core has logged why
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {cfg.listen}", setting="listen")
    http_listener = None
    if cfg.http.listen:
        # The same RPCs (and so the same admission and drain) as the gRPC servicer's. Bound
        # before the gRPC server starts, so that an address in use fails before anything runs.
        routes = page() if cfg.http.ui else []
        app = http_app([connect_app(rpcs, max_request)], routes)
        http_listener = HttpServer(cfg, app)
    await server.start()
    if http_listener is not None:
        await http_listener.start()
        log.info(
            "longread serving Connect and gRPC-Web on port %d (%s)",
            http_listener.port,
            "tls" if http_listener.tls else "plaintext",
        )
    loop_lag = None
    if admission.limit is not None:
        loop_lag = LoopLag(admission.limit, cfg.admission.sample_interval_ms / 1000)
        loop_lag.start()
    readiness, watchdog = await _start_health(cfg, health_servicer, gate, redis, resilience)
    log.info(
        "longread listening on port %d (%s, %s event loop)",
        port,
        "tls" if creds else "plaintext",
        type(asyncio.get_running_loop()).__module__.split(".")[0],
    )
    return Gateway(
        cfg,
        server,
        port,
        http,
        health_servicer,
        tel,
        sandbox,
        redis,
        cache=response_cache,
        resilience=resilience,
        ledger=ledger,
        encodings=analysis.planning.encodings,
        admission=admission,
        loop_lag=loop_lag,
        readiness=readiness,
        watchdog=watchdog,
        http_listener=http_listener,
    )


def connection_age_options(cfg: Config) -> list[tuple[str, int]]:
    """gRPC's options for ``server.max_connection_age_s`` and its grace (absent: no limit)."""
    s = cfg.server
    if s.max_connection_age_ms:
        log.warning("server.max_connection_age_ms is the older spelling of max_connection_age_s")
    age_ms = s.max_connection_age_ms or round(s.max_connection_age_s * 1000)
    opts = []
    if age_ms > 0:
        opts.append(("grpc.max_connection_age_ms", min(age_ms, _GRPC_MAX_LENGTH)))
        if s.max_connection_age_grace_s > 0:
            grace_ms = round(s.max_connection_age_grace_s * 1000)
            opts.append(("grpc.max_connection_age_grace_ms", min(grace_ms, _GRPC_MAX_LENGTH)))
    return opts


async def _start_health(
    cfg: Config,
    servicer: health.aio.HealthServicer,
    gate: RedisGate | None,
    redis: RedisClient | None,
    resilience: Resilience,
) -> tuple[Readiness, LoopWatchdog | None]:
    """Readiness from Redis (when required) and the circuits; liveness from a watchdog."""
    required = cfg.redis_required and gate is not None and redis is not None
    readiness = Readiness(
        servicer,
        interval_s=cfg.server.readiness_interval_s,
        gate=gate if required else None,
        ping=redis.ping if required and redis is not None else None,
        breakers=resilience.breakers if resilience.breaker is not None else None,
        params=resilience.breaker_params,
        upstreams=[u.name for u in cfg.upstreams],
    )
    await readiness.start()
    await servicer.set(LIVENESS, SERVING)
    watchdog = None
    if cfg.server.liveness_block_s > 0:
        loop = asyncio.get_running_loop()
        watchdog = LoopWatchdog(servicer, loop, cfg.server.liveness_block_s)
        watchdog.start()
    return readiness, watchdog


async def serve(cfg: Config) -> None:
    """Runs until SIGTERM or SIGINT, then drains gracefully."""
    gw = await start(cfg)
    prepare_gc(cfg.server.gc_thresholds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"longread serving on {cfg.listen.rsplit(':', 1)[0]}:{gw.port}", flush=True)
    if gw.http_listener is not None:
        host = cfg.http.listen.rsplit(":", 1)[0]
        print(f"longread serving HTTP (Connect, gRPC-Web) on {host}:{gw.http_port}", flush=True)
    await stop.wait()
    log.info(
        "draining (NOT_SERVING; new RPCs served for %.1fs, then in-flight ones get %.1fs)",
        cfg.server.drain_delay_s,
        cfg.server.grace_s,
    )
    await gw.stop()


def prepare_gc(thresholds: list[int]) -> None:
    """The garbage collector made ready for serving, once start-up is done: start-up's
    objects frozen out of its reach, then its thresholds set (``server.gc_thresholds``). The
    benchmarks' floor relay does the same, so that it differs from the gateway only in the
    gateway's own work."""
    _freeze_startup_objects()
    _set_gc_thresholds(thresholds)


def _freeze_startup_objects() -> None:
    """Moves what start-up built (modules, the tokenizers' tables, the catalog, protobuf
    descriptors: hundreds of thousands of objects that live as long as the process) out of the
    cyclic garbage collector's reach (``gc.freeze``). A full collection otherwise walks them
    all again, and the whole event loop stops for it: every open Stream's next delta waits.
    Start-up's own garbage is collected first, so nothing freed is kept."""
    gc.collect()
    gc.freeze()
    log.debug("%d start-up objects left out of garbage collection", gc.get_freeze_count())


def _set_gc_thresholds(thresholds: list[int]) -> None:
    """The collector's thresholds for serving (``server.gc_thresholds``; empty: Python's)."""
    if thresholds:
        gc.set_threshold(*thresholds)
    log.debug("garbage collection thresholds %s", gc.get_threshold())


def _load_tokenizers(catalog: Catalog) -> None:
    for name in {m.tokenizer for m in catalog.models()}:
        get_tokenizer(name).token_byte_lengths  # noqa: B018 (builds the table)


def _http_client(cfg: Config) -> UpstreamHttp:
    """The client for upstream calls (``vendors/transport.py``)."""
    return UpstreamHttp(upstream_client(cfg.server.upstream_max_connections))


def _instrument_clients(tel: Telemetry, http: UpstreamHttp, redis: RedisClient | None) -> None:
    """Client spans under each model-call attempt (httpx) and state operation (redis)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(http.client, tracer_provider=tel.tracer_provider)
    if redis is not None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(redis, tracer_provider=tel.tracer_provider)


def main(config_path: str | None = None, listen: str | None = None) -> int:
    """``longread serve``: 0 after a graceful stop; 2, with one line on stderr naming the
    setting and where it was given, when a setting, a file it names or an address cannot be
    used."""
    cfg: Config | None = None
    try:
        cfg = load_config(config_path)
        if listen:
            cfg.listen = listen
            cfg.origins.note("listen", "--host/--port")
        _check_listen(cfg.listen)
        if cfg.http.listen:
            _check_listen(cfg.http.listen, "http.listen")
        configure_logging(
            cfg.telemetry.json_logs, cfg.telemetry.log_level, cfg.telemetry.record_content
        )
        with asyncio.Runner(loop_factory=loop_factory(cfg.server.event_loop)) as runner:
            runner.run(serve(cfg))
    except ConfigError as e:
        if cfg is not None:
            cfg.origins.locate(e)
        # The CLI's one shape of failure (longread/cli.py): what, then what to do.
        print(f"longread: error: {e}; hint: {_hint(e)}", file=sys.stderr)
        return 2
    return 0


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop for ``server.event_loop`` (None: asyncio's default).

    uvloop runs the loop's own work (readiness polling, callbacks, timers, socket reads and
    writes) in C, where asyncio's default loop runs it in Python; a gateway holding many
    streams open spends a large share of its CPU there. Everything the gateway runs on the
    loop uses only asyncio's public interface, so either loop serves it."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "uvloop is not installed",
                setting="server.event_loop",
                hint='pip install uvloop, or set server.event_loop = "asyncio"',
            ) from None
        return None
    return uvloop.new_event_loop


def _hint(e: ConfigError) -> str:
    if e.hint:
        return e.hint
    where = e.source or (f"the setting {e.setting}" if e.setting else "")
    if "already in use" in e.why:
        return f"another process listens there: stop it, or choose another port ({where})"
    if where:
        return f"correct {e.setting or 'it'} where it is given ({where})"
    return "see Configuration in the README"


def _check_listen(address: str, setting: str = "listen") -> None:
    """Before anything starts (and logs): an address in use fails here in one line, where
    gRPC would fail later, after its own lines on stderr."""
    try:
        preflight.probe_listen(address)
    except preflight.Unusable as e:
        raise ConfigError(e.why, setting=setting) from None
