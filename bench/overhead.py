"""Gateway overhead: Analyze of a short document through the gateway, against the same request
sent straight to the sandbox, the floor (a bare grpc.aio server making the same HTTP hop), the
LiteLLM proxy and the Portkey AI gateway, all in one run, all against one zero-latency sandbox.
The floor also runs with its hop through the gateway's vendor layer (``floor_vendor``: adapter
and transport, none of the mechanisms), and the gateway runs once more with none of its
pipeline's stages (``ours_no_stages``, ``bench._no_stages``), sequentially and at saturation, so
the gap between ours and the floor splits into what that layer costs, what the stages cost and
what the rest of the gateway costs.

Placement (2 cores): the process under test (gateway, floor, LiteLLM or Portkey) on CPU 0; the load
generator (ghz for gRPC, vegeta for HTTP, both Go, open loop) and the sandbox on CPU 1.
Cache misses: every gateway request carries a unique document (a ghz template), so each one
looks up the cache, misses, goes upstream and is stored, with the cache at its defaults.

Reports sequential overhead (1 in flight, interleaved rounds; latency minus direct latency),
fixed open-loop rates, and the highest rate each sustains with 100 % success and p99 <= 50 ms,
and where the gateway's CPU goes at saturation (``profile``: py-spy's samples folded by our
stages and the libraries under them, ``bench._profile``).
Prints one JSON object. Run: python -m bench.overhead
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from typing import Any

import grpc
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc
from longread.v1 import types_pb2 as pb
from longread_server.app import start
from longread_server.config import UpstreamConfig, load_config
from longread_server.domain import VendorKind

from bench import _load, _peers, _profile, _servers
from bench._load import LOADGEN_CPU, SERVER_CPU, Stats, log

DOC = "The tide turns at four. The harbour closes at nine. Ferries leave hourly. " * 6
QUESTION = "When does the harbour close?"
MODEL = "gpt-4.1-mini"
SEQ_ROUNDS = 3
SEQ_CALLS = 200  # per round, gRPC targets
SEQ_HTTP_S = 1.0  # per round, direct (vegeta runs for a duration)
SEQ_LITELLM_S = 2.0
LEVELS = (50, 250, 500, 1000)
LEVEL_S = 3.0
LEVEL_TIMEOUT_S = 5.0  # per-request deadline at fixed rates: an overloaded level stays short
LITELLM_LEVELS = (50,)  # above its capacity (~25-55/s) a level only measures queueing
SEQ_PORTKEY_S = 1.0
STEP_S = 2.0  # per rate of the max-sustained search...
STEP_MIN_CALLS = 100  # ...and at least this many calls, so p99 is not just the maximum
SATURATION_CONC = 16
PROFILE_S = 6.0  # the profiled run: about this long, for a thousand samples or more
P99_MS = 50.0

_run = 0


def analyze_data(unique: bool = True) -> dict[str, Any]:
    """The Analyze request as proto JSON; ``unique`` adds a run- and request-unique suffix
    (ghz template) so every request is a cache miss."""
    global _run
    _run += 1
    text = DOC + (f"(run {_run}, request {{{{.RequestNumber}}}})" if unique else "")
    return {"document": {"text": text}, "instruction": QUESTION, "model": {"model": MODEL}}


async def capture(sandbox_port: int) -> tuple[bytes, bytes]:
    """The exact upstream body the gateway sends for our request, and its AnalyzeResponse:
    an in-process gateway against the sandbox, its upstream client's sends recorded."""
    cfg = load_config(env={})
    cfg.listen = "127.0.0.1:0"
    cfg.telemetry.access_log = False
    cfg.upstreams = [
        UpstreamConfig(
            name="openai",
            kind=VendorKind.OPENAI,
            base_url=f"http://127.0.0.1:{sandbox_port}/v1",
            api_key="bench",
        )
    ]
    gw = await start(cfg)
    bodies: list[bytes] = []

    send = gw.http.stream

    def recording(method: str, url: str, *, content: bytes, **kw: Any) -> Any:
        bodies.append(content)
        return send(method, url, content=content, **kw)

    gw.http.stream = recording  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            stub = svc_grpc.AnalysisServiceStub(ch)
            resp = await stub.Analyze(
                svc.AnalyzeRequest(
                    document=pb.Document(text=DOC + "(request 0)"),
                    instruction=QUESTION,
                    model=pb.ModelSelection(model=MODEL),
                )
            )
    finally:
        await gw.stop(0.5)
    return bodies[0], resp.SerializeToString()


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b and not math.isnan(a) and not math.isnan(b) else None


def main() -> dict[str, Any]:
    _load.exit_on_sigterm()
    machine = _load.MachineLoad()
    t_start = time.monotonic()
    out: dict[str, Any] = {}
    litellm_reason: str | None = None
    portkey_reason: str | None = None
    install_s = portkey_install_s = 0.0
    try:
        install_s = _peers.ensure_litellm()
    except Exception as exc:
        litellm_reason = f"install failed: {type(exc).__name__}: {exc}"
    try:
        portkey_install_s = _peers.ensure_portkey()
    except Exception as exc:
        portkey_reason = f"install failed: {type(exc).__name__}: {exc}"
    sp, gp, ngp, fp, hp, vp, lp, kp = (_servers.free_port() for _ in range(8))
    procs: list[Any] = []
    llm: _peers.LiteLLM | None = None
    pk: _peers.Portkey | None = None
    template = None
    try:
        sb = _servers.sandbox(sp, cpu=LOADGEN_CPU)
        procs.append(sb)
        api_base = f"http://127.0.0.1:{sp}/v1"
        if litellm_reason is None:
            llm = _peers.LiteLLM(lp, api_base, MODEL, cpu=SERVER_CPU)
        if portkey_reason is None:
            pk = _peers.Portkey(kp, api_base, cpu=SERVER_CPU)
        body, response = asyncio.run(capture(sp))
        template = _load.write_temp(response, ".pb")
        gw = _servers.gateway(gp, sp, cpu=SERVER_CPU)
        procs.append(gw)
        gwn = _servers.gateway(ngp, sp, cpu=SERVER_CPU, serve=("bench._no_stages",))
        procs.append(gwn)
        fl = _peers.floor(fp, upstream=api_base, response=template, cpu=SERVER_CPU)
        procs.append(fl)
        flx = _peers.floor(hp, upstream=api_base, response=template, http="httpx", cpu=SERVER_CPU)
        procs.append(flx)
        flv = _peers.floor(vp, upstream=api_base, response=template, http="vendor", cpu=SERVER_CPU)
        procs.append(flv)
        litellm_ready_s = None
        if llm is not None:
            try:
                litellm_ready_s = llm.wait_ready()
            except Exception as exc:
                litellm_reason = f"start failed: {exc}"
                llm.stop()
                llm = None
        portkey_ready_s = None
        if pk is not None:
            try:
                portkey_ready_s = pk.wait_ready()
            except Exception as exc:
                portkey_reason = f"start failed: {exc}"
                pk.stop()
                pk = None
        direct_url = f"{api_base}/chat/completions"
        llm_headers = {"authorization": f"Bearer {llm.key}"} if llm else {}

        def direct(rate: float, seconds: float) -> Stats:
            # The sandbox is the system under test here: it gets the server core for the run.
            os.sched_setaffinity(sb.p.pid, {SERVER_CPU})
            try:
                return _load.vegeta(
                    direct_url,
                    body,
                    headers={"authorization": "Bearer bench"},
                    rate=rate,
                    duration_s=seconds,
                    server=sb,
                    sandbox=sb,
                )
            finally:
                os.sched_setaffinity(sb.p.pid, {LOADGEN_CPU})

        def litellm(rate: float, seconds: float) -> Stats:
            assert llm is not None
            return _load.vegeta(
                llm.url,
                body,
                headers=llm_headers,
                rate=rate,
                duration_s=seconds,
                server=llm.proc,
                sandbox=sb,
                timeout_s=LEVEL_TIMEOUT_S,
            )

        def portkey(rate: float, seconds: float, workers: int = 1) -> Stats:
            assert pk is not None
            return _load.vegeta(
                pk.url,
                body,
                headers=pk.headers,
                rate=rate,
                duration_s=seconds,
                server=pk.proc,
                sandbox=sb,
                timeout_s=LEVEL_TIMEOUT_S,
                workers=workers,
            )

        def grpc_run(
            port: int, proc: Any, total: int, rps: float | None, concurrency: int = 1
        ) -> Stats:
            return _load.ghz(
                port,
                analyze_data(),
                total=total,
                rps=rps,
                concurrency=concurrency if rps is None else 50,
                server=proc,
                sandbox=sb,
                timeout_s=LEVEL_TIMEOUT_S,
            )

        # Warm-up: tokenizer, connections, JIT-less but lazy imports.
        log("warm-up")
        for port in (gp, ngp, fp, hp):
            _load.ghz(port, analyze_data(), total=300, concurrency=4)
        direct(100, 1.0)
        if llm is not None:
            litellm(20, 2.0)
            _load.wait_idle([llm.proc])
        if pk is not None:
            portkey(200, 2.0)
            _load.wait_idle([pk.proc])

        # Sequential, interleaved rounds so machine noise hits every system alike.
        log("sequential")
        seq: dict[str, list[Stats]] = {
            "direct": [],
            "ours": [],
            "ours_no_stages": [],
            "floor": [],
            "floor_httpx": [],
            "floor_vendor": [],
            "litellm": [],
            "portkey": [],
        }
        for _ in range(SEQ_ROUNDS):
            seq["direct"].append(direct(0, SEQ_HTTP_S))
            seq["ours"].append(grpc_run(gp, gw, SEQ_CALLS, None))
            seq["ours_no_stages"].append(grpc_run(ngp, gwn, SEQ_CALLS, None))
            seq["floor"].append(grpc_run(fp, fl, SEQ_CALLS, None))
            seq["floor_httpx"].append(grpc_run(hp, flx, SEQ_CALLS, None))
            seq["floor_vendor"].append(grpc_run(vp, flv, SEQ_CALLS, None))
            if llm is not None:
                seq["litellm"].append(litellm(0, SEQ_LITELLM_S))
            if pk is not None:
                seq["portkey"].append(portkey(0, SEQ_PORTKEY_S))
        pooled = {k: _load.merge(v) for k, v in seq.items() if v}

        def seq_overhead(name: str) -> dict[str, Any] | None:
            if name not in pooled:
                return None
            o = _load.overhead(pooled[name], pooled["direct"])
            per_round = [
                round(r.pct(50) - d.pct(50), 3)
                for r, d in zip(seq[name], seq["direct"], strict=True)
            ]
            return {"p50": o["p50"], "p99": o["p99"], "mean": o["mean"], "p50_per_round": per_round}

        sequential: dict[str, Any] = {
            "ours_overhead_ms": seq_overhead("ours"),
            "floor_overhead_ms": seq_overhead("floor"),
            "litellm_overhead_ms": seq_overhead("litellm"),
            "portkey_overhead_ms": seq_overhead("portkey"),
            "floor_httpx_overhead_ms": seq_overhead("floor_httpx"),
            "floor_vendor_overhead_ms": seq_overhead("floor_vendor"),
            "ours_no_stages_overhead_ms": seq_overhead("ours_no_stages"),
            "ours_over_floor_p50": None,
            "litellm_over_ours_p50": None,
            "portkey_over_ours_p50": None,
            "latency_ms": {k: v.summary() for k, v in pooled.items()},
            "server_cpu_ms_per_req": {
                k: v.report()["server_cpu_ms_per_req"] for k, v in pooled.items()
            },
            "calls": {k: v.sent for k, v in pooled.items()},
        }
        if llm is None:
            sequential["litellm_overhead_ms"] = None
        o, f, ll = (
            sequential[k] for k in ("ours_overhead_ms", "floor_overhead_ms", "litellm_overhead_ms")
        )
        sequential["ours_over_floor_p50"] = ratio(o["p50"], f["p50"])
        sequential["litellm_over_ours_p50"] = ratio(ll["p50"], o["p50"]) if ll else None
        pko = sequential["portkey_overhead_ms"]
        sequential["portkey_over_ours_p50"] = ratio(pko["p50"], o["p50"]) if pko else None
        out["sequential"] = sequential
        flx.stop()  # sequential only: it tells how much of the floor's cost is httpx

        # Fixed open-loop rates.
        log("levels")
        levels = []
        for rate in LEVELS:
            n = int(rate * LEVEL_S)
            d = direct(rate, LEVEL_S)
            ours = grpc_run(gp, gw, n, rate)
            _load.wait_idle([gw])
            fl_st = grpc_run(fp, fl, n, rate)
            _load.wait_idle([fl])
            level: dict[str, Any] = {
                "rps": rate,
                "success": round(ours.success, 4),
                "overhead_ms": _load.overhead(ours, d),
                "server_cpu_ms_per_req": ours.report()["server_cpu_ms_per_req"],
                "ours": ours.report(),
                "direct": d.report(),
                "floor": {
                    "success": round(fl_st.success, 4),
                    "overhead_ms": _load.overhead(fl_st, d),
                    **fl_st.report(),
                },
            }
            if llm is None:
                level["litellm"] = None
            elif rate in LITELLM_LEVELS:
                ll = litellm(rate, LEVEL_S)
                level["litellm"] = {
                    "success": round(ll.success, 4),
                    "overhead_ms": _load.overhead(ll, d),
                    **ll.report(),
                }
                _load.wait_idle([llm.proc], max_s=30)
            else:
                level["litellm"] = {"skipped": "above its max sustained rate (see below)"}
            if pk is None:
                level["portkey"] = None
            else:
                pst = portkey(rate, LEVEL_S)
                level["portkey"] = {
                    "success": round(pst.success, 4),
                    "overhead_ms": _load.overhead(pst, d),
                    **pst.report(),
                }
                _load.wait_idle([pk.proc], max_s=30)
            log(f"  {rate}/s ours {ours.summary()} success {ours.success:.3f}")
            levels.append(level)
        out["levels"] = levels

        # Overloaded levels make the gateway's own deadline expiries count as upstream failures,
        # which can open the upstream's circuit for open_s (30 s): a fresh gateway for the rest.
        breaker_trips = sum(
            n
            for lv in levels
            for k, n in (lv["ours"].get("errors") or {}).items()
            if "circuit open" in k
        )
        procs.remove(gw)
        gw.stop()
        gw = _servers.gateway(gp, sp, cpu=SERVER_CPU)
        procs.append(gw)
        _load.ghz(gp, analyze_data(), total=300, concurrency=4)

        # Highest sustained rate: 100 % success, p99 <= 50 ms, >= 95 % of the rate achieved.
        log("max sustained: ours")
        ours_max, ours_steps = _load.max_sustained(
            lambda r: grpc_run(gp, gw, max(STEP_MIN_CALLS, int(r * STEP_S)), r),
            start=100,
            p99_ms=P99_MS,
            cap=4000,
            settle=lambda: _load.wait_idle([gw]),
        )
        log("max sustained: floor")
        floor_max, floor_steps = _load.max_sustained(
            lambda r: grpc_run(fp, fl, max(STEP_MIN_CALLS, int(r * STEP_S)), r),
            start=400,
            p99_ms=P99_MS,
            cap=6000,
            settle=lambda: _load.wait_idle([fl]),
        )
        llm_max: float | None = None
        llm_steps: list[_load.Step] = []
        if llm is not None:
            log("max sustained: litellm")
            proc = llm.proc
            llm_max, llm_steps = _load.max_sustained(
                lambda r: litellm(r, min(4.0, max(STEP_S, STEP_MIN_CALLS / r))),
                start=12,
                p99_ms=P99_MS,
                cap=400,
                factor=1.5,
                lowest=4,
                bisections=2,
                settle=lambda: _load.wait_idle([proc], max_s=30),
            )
        pk_max: float | None = None
        pk_steps: list[_load.Step] = []
        if pk is not None:
            log("max sustained: portkey")
            pk_proc = pk.proc
            pk_max, pk_steps = _load.max_sustained(
                lambda r: portkey(r, max(STEP_S, STEP_MIN_CALLS / r)),
                start=100,
                p99_ms=P99_MS,
                cap=4000,
                settle=lambda: _load.wait_idle([pk_proc], max_s=30),
            )
        # Throughput at saturation (closed loop, SATURATION_CONC in flight): capacity without a
        # latency bound, robust where a p99 bound is decided by a system's own tail.
        log("saturation throughput")
        sat_calls = {"ours": max(300, int(3 * ours_max)), "floor": max(300, int(3 * floor_max))}
        sat = {
            "ours": grpc_run(gp, gw, sat_calls["ours"], None, SATURATION_CONC),
            "floor": grpc_run(fp, fl, sat_calls["floor"], None, SATURATION_CONC),
            "floor_vendor": grpc_run(vp, flv, sat_calls["floor"], None, SATURATION_CONC),
            "ours_no_stages": grpc_run(ngp, gwn, sat_calls["ours"], None, SATURATION_CONC),
        }
        flv.stop()
        gwn.stop()
        if llm is not None:
            sat["litellm"] = _load.vegeta(
                llm.url,
                body,
                headers=llm_headers,
                rate=0,
                duration_s=4.0,
                workers=SATURATION_CONC,
                server=llm.proc,
                sandbox=sb,
            )
        if pk is not None:
            sat["portkey"] = portkey(0, 4.0, workers=SATURATION_CONC)
        sat_rps = {k: round(v.ok / v.wall_s, 1) for k, v in sat.items()}
        sat_cpu = {k: v.report()["server_cpu_ms_per_req"] for k, v in sat.items()}
        # Where our CPU goes at saturation: the same closed loop once more, sampled by py-spy
        # (a run of its own, so the sampling does not touch the figures above).
        log("profile: ours at saturation")
        prof_calls = max(1000, int(PROFILE_S * sat_rps["ours"]))
        with _profile.Profile(gw.p.pid) as prof:
            prof_run = grpc_run(gp, gw, prof_calls, None, SATURATION_CONC)
        out["profile"] = {
            "what": f"gateway at saturation ({SATURATION_CONC} in flight, "
            f"{prof_run.sent} misses), py-spy {_profile.RATE_HZ} Hz, non-blocking, idle excluded",
            "rps_while_sampled": round(prof_run.ok / prof_run.wall_s, 1),
            **prof.summary(),
        }
        out["max_sustained_rps"] = {
            "ours": round(ours_max),
            "floor": round(floor_max),
            "litellm": round(llm_max) if llm_max is not None else None,
            "portkey": round(pk_max) if pk_max is not None else None,
            "ours_over_litellm": ratio(ours_max, llm_max or math.nan),
            "ours_over_portkey": ratio(ours_max, pk_max or math.nan),
            "ours_over_floor": ratio(ours_max, floor_max),
            "saturation_rps": sat_rps,
            "saturation_server_cpu_ms_per_req": sat_cpu,
            "saturation_cpu_ours_over_floor": ratio(sat_cpu["ours"], sat_cpu["floor"]),
            # How much of the gap the vendor layer alone makes (floor_vendor: the floor with
            # its HTTP hop through the gateway's adapter and transport).
            "saturation_cpu_floor_vendor_over_floor": ratio(
                sat_cpu["floor_vendor"], sat_cpu["floor"]
            ),
            # And how much is left with none of the pipeline's stages.
            "saturation_cpu_no_stages_over_floor": ratio(
                sat_cpu["ours_no_stages"], sat_cpu["floor"]
            ),
            "saturation_ours_over_litellm": ratio(
                sat_rps["ours"], sat_rps.get("litellm", math.nan)
            ),
            "saturation_ours_over_floor": ratio(sat_rps["ours"], sat_rps["floor"]),
            "saturation_ours_over_portkey": ratio(
                sat_rps["ours"], sat_rps.get("portkey", math.nan)
            ),
            "criterion": f"100% success, p99 <= {P99_MS:g} ms, >= 95% of rate achieved, "
            f"{STEP_S:g} s per rate",
            "steps": {
                "ours": [s.report() for s in ours_steps],
                "floor": [s.report() for s in floor_steps],
                "litellm": [s.report() for s in llm_steps],
                "portkey": [s.report() for s in pk_steps],
            },
        }
        s_ours = sequential["ours_overhead_ms"]
        s_llm = sequential["litellm_overhead_ms"]
        at500 = next(lv for lv in levels if lv["rps"] == 500)
        out["levels_circuit_open_errors"] = breaker_trips
        out["targets"] = {
            "seq_overhead_p50_le_1ms": s_ours["p50"] <= 1.0,
            "seq_overhead_15x_below_litellm": (s_llm["p50"] >= 15 * s_ours["p50"])
            if s_llm
            else None,
            "at_500_success_100_and_p99_overhead_le_3ms": at500["success"] == 1.0
            and at500["overhead_ms"]["p99"] <= 3.0,
            "max_rps_ge_20x_litellm": (ours_max >= 20 * llm_max) if llm_max else None,
            "saturation_rps_ge_20x_litellm": (sat_rps["ours"] >= 20 * sat_rps["litellm"])
            if "litellm" in sat_rps
            else None,
            "max_rps_ge_30pct_of_floor": ours_max >= 0.3 * floor_max,
            # Issue 22, item 3: a leaner miss path.
            "saturation_cpu_per_miss_le_2x_floor": sat_cpu["ours"] <= 2 * sat_cpu["floor"],
            "max_rps_ge_90pct_of_floor": ours_max >= 0.9 * floor_max,
            "max_rps_ge_10x_litellm": (ours_max >= 10 * llm_max) if llm_max else None,
        }
        out["setup"] = {
            "miss_path": "unique document per request (ghz {{.RequestNumber}} template plus a "
            "run id), gateway cache enabled at defaults: every call misses, goes upstream, is "
            "stored",
            "document_chars": len(DOC) + 20,
            "upstream_body_bytes": len(body),
            "response_bytes": {"ours": len(response)},
            "placement": f"gateway/floor/LiteLLM/Portkey on CPU {SERVER_CPU}; sandbox, ghz and "
            f"vegeta on CPU {LOADGEN_CPU} (taskset); for direct runs the sandbox is moved to CPU "
            f"{SERVER_CPU} (sched_setaffinity), so no system shares a core with its generator",
            "request_deadline_s": LEVEL_TIMEOUT_S,
            "gateway_restarted_after_levels": "yes: overload at the fixed levels can open the "
            "upstream circuit (client deadlines counted as upstream failures)",
            "load_generators": f"ghz {_load.GHZ_VERSION} (--async --rps, -c 50, --cpus 1; "
            f"sequential: -c 1), vegeta {_load.VEGETA_VERSION} (-rate R/1s; sequential: "
            "-rate=0 -max-workers=1)",
            "direct": "vegeta POSTs the gateway's exact upstream body to the sandbox",
            "floor": "bench._floor: grpc.aio (asyncio loop) + one POST to the sandbox over a "
            "minimal keep-alive HTTP/1.1 client; floor_httpx: the same with httpx; "
            "floor_vendor: the same through the gateway's vendor layer (the OpenAI adapter "
            "over UpstreamHttp and LeanTransport), without any of its mechanisms",
            "ours_no_stages": "bench._no_stages: the gateway with none of its pipeline's stages "
            "(no cache, single-flight, budget, limits, fallback, retry, hedge, breaker or "
            "timeouts), the rest unchanged",
            "litellm": {
                "version": _peers.LITELLM_VERSION,
                "workers": 1,
                "venv": str(_peers.LITELLM_VENV),
                "install_s": round(install_s, 1),
                "ready_s": round(litellm_ready_s, 1) if litellm_ready_s else None,
                "config": "one openai/ deployment at the sandbox, master key, cache off, "
                "spend/error logs off, offline env (LITELLM_LOCAL_*=True, remote URLs -> "
                "127.0.0.1:9)",
                "unavailable": litellm_reason,
            },
            "portkey": {
                "version": _peers.PORTKEY_VERSION,
                "dir": str(_peers.PORTKEY_DIR),
                "install_s": round(portkey_install_s, 1),
                "ready_s": round(portkey_ready_s, 1) if portkey_ready_s else None,
                "config": "Node, one process, headless; per request x-portkey-provider: openai "
                "and x-portkey-custom-host: the sandbox; overrides "
                f"{_peers.PORTKEY_OVERRIDES}",
                "unavailable": portkey_reason,
            },
            **_peers.env_note(),
        }
        out["bench_wall_s"] = round(time.monotonic() - t_start, 1)
        out["machine"] = machine.report()
        return out
    finally:
        if llm is not None:
            llm.stop()
        if pk is not None:
            pk.stop()
        for p in reversed(procs):
            p.stop()
        if template is not None:
            template.unlink(missing_ok=True)


if __name__ == "__main__":
    print(json.dumps(main()))
