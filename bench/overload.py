"""Overload: what the gateway does with more than it can take, with admission control and
without it, against a sandbox that answers every call after a small fixed latency.

1. The sustainable rate: the saturation throughput (closed loop, many in flight) of the gateway
   without admission control, cache misses (unique documents).
2. Twice that rate, open loop, for ``OVERLOAD_S``: goodput (answers per second) against the
   sustainable rate; admitted requests' overhead (latency minus the sandbox's latency), p99;
   refusals' latency, p99; and, from a Python client probing alongside, whether refusals carry
   RetryInfo.
3. Two tenants: one at a fifth of the sustainable rate, the other flooding at ten times that
   (twice the sustainable rate): the first tenant's success rate.

Placement as in ``bench.overhead``: gateway on CPU 0; sandbox and ghz on CPU 1.
Prints one JSON object. Run: python -m bench.overload
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import grpc
from longread.client import AsyncClient, Options, error_details

from bench import _load, _servers
from bench._load import LOADGEN_CPU, SERVER_CPU, log
from bench.overhead import DOC, QUESTION, analyze_data

UPSTREAM_MS = 20.0  # the sandbox's latency for every call
SATURATION_S = 5.0
SATURATION_CONC = 64
OVERLOAD_S = 30.0
TENANTS_S = 20.0
DEADLINE_S = 5.0  # each request's deadline
KEYS = {"victim": "bench-victim", "flood": "bench-flood"}
TENANTS = "".join(
    f'[[tenants]]\nname = "{n}"\napi_keys_env = "BENCH_TENANT_{n.upper()}"\n' for n in KEYS
)
TENANT_ENV = {f"BENCH_TENANT_{n.upper()}": k for n, k in KEYS.items()}


def ghz_run(
    port: int, *, key: str, rps: float | None, seconds: float, conc: int = 50
) -> list[dict[str, Any]]:
    """Every request's record (latency in ns, status, error) from one ghz run."""
    cmd = [
        _load.tool("ghz"),
        "--insecure",
        "--proto",
        _load.PROTO,
        "--import-paths",
        "protos",
        "--call",
        _load.ANALYZE,
        "-d",
        json.dumps(analyze_data()),
        "--metadata",
        json.dumps({"authorization": f"Bearer {key}"}),
        "-z",
        f"{seconds}s",
        "--timeout",
        f"{DEADLINE_S}s",
        "--cpus",
        "1",
        "--format",
        "json",
        "-c",
        str(conc),
    ]
    if rps is not None:
        cmd += ["--async", "--rps", str(int(rps))]
    cmd.append(f"127.0.0.1:{port}")
    out = subprocess.run(
        _load.pinned(LOADGEN_CPU, cmd),
        cwd=_servers.ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + DEADLINE_S + 120,
    )
    if not out.stdout.strip():
        raise RuntimeError(f"ghz failed: {out.stderr.strip()[:500]}")
    details: list[dict[str, Any]] = json.loads(out.stdout).get("details") or []
    return details


def summarize(details: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ok = [d["latency"] / 1e6 for d in details if d.get("status") == "OK" and not d.get("error")]
    refused = [d["latency"] / 1e6 for d in details if "ResourceExhausted" in (d.get("error") or "")]
    other = Counter(
        (d.get("error") or d.get("status") or "?")[:80]
        for d in details
        if d.get("error") and "ResourceExhausted" not in d["error"]
    )
    ok.sort()
    refused.sort()
    return {
        "sent": len(details),
        "ok": len(ok),
        "goodput_rps": round(len(ok) / seconds, 1),
        "admitted_overhead_ms": {
            "p50": round(_load._pct(ok, 50) - UPSTREAM_MS, 2),
            "p99": round(_load._pct(ok, 99) - UPSTREAM_MS, 2),
        },
        "refused": len(refused),
        "refusal_ms": {
            "p50": round(_load._pct(refused, 50), 2),
            "p99": round(_load._pct(refused, 99), 2),
        },
        "other_errors": dict(other.most_common(3)),
    }


class RetryInfoProbe:
    """A Python client alongside the load: records, for each refusal it gets, whether its
    status carried RetryInfo."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.refusals = 0
        self.with_retry_info = 0
        self.reasons: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> RetryInfoProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        async with AsyncClient(f"127.0.0.1:{self.port}", api_key=self.key) as c:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    await c.analyze(
                        f"{DOC} (probe {time.time_ns()} {n})",
                        QUESTION,
                        options=Options(cache="bypass"),
                        timeout=DEADLINE_S,
                    )
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        d = error_details(e)
                        self.refusals += 1
                        self.reasons[d.reason] += 1
                        self.with_retry_info += d.retry_after_s is not None
                await asyncio.sleep(0.02)

    def report(self) -> dict[str, Any]:
        return {
            "probe_refusals": self.refusals,
            "with_retry_info": self.with_retry_info,
            "reasons": dict(self.reasons),
        }


def main() -> dict[str, Any]:
    _load.exit_on_sigterm()
    machine = _load.MachineLoad()
    t0 = time.monotonic()
    sp, on_port, off_port = (_servers.free_port() for _ in range(3))
    procs: list[_servers.Proc] = []
    out: dict[str, Any] = {}
    try:
        procs.append(_servers.sandbox(sp, "--latency-ms", str(UPSTREAM_MS), cpu=LOADGEN_CPU))
        variants = {
            "admission": _servers.gateway(
                on_port,
                sp,
                cpu=SERVER_CPU,
                env={**TENANT_ENV, "LONGREAD_ADMISSION__ENABLED": "true"},
                extra_config=TENANTS,
            ),
            "no_admission": _servers.gateway(
                off_port,
                sp,
                cpu=SERVER_CPU,
                env={**TENANT_ENV, "LONGREAD_ADMISSION__ENABLED": "false"},
                extra_config=TENANTS,
            ),
        }
        procs.extend(variants.values())
        ports = {"admission": on_port, "no_admission": off_port}
        log("warm-up")
        for port in ports.values():
            ghz_run(port, key=KEYS["victim"], rps=None, seconds=2.0, conc=8)

        log("sustainable rate")
        sat = ghz_run(
            off_port, key=KEYS["victim"], rps=None, seconds=SATURATION_S, conc=SATURATION_CONC
        )
        sustainable = sum(1 for d in sat if d.get("status") == "OK") / SATURATION_S
        out["sustainable_rps"] = round(sustainable, 1)
        log(f"  {sustainable:.0f}/s")

        overload: dict[str, Any] = {}
        for name, port in ports.items():
            _load.wait_idle([variants[name]])
            log(f"2x for {OVERLOAD_S:g}s: {name}")
            with RetryInfoProbe(port, KEYS["flood"]) as probe:
                res = summarize(
                    ghz_run(port, key=KEYS["flood"], rps=2 * sustainable, seconds=OVERLOAD_S),
                    OVERLOAD_S,
                )
            res["goodput_over_sustainable"] = round(res["goodput_rps"] / sustainable, 3)
            res["retry_info"] = probe.report()
            overload[name] = res
            log(f"  {res}")
        out["overload_2x"] = overload

        tenants: dict[str, Any] = {}
        victim_rps = sustainable / 5
        for name, port in ports.items():
            _load.wait_idle([variants[name]])
            log(f"flood at 10x the other tenant for {TENANTS_S:g}s: {name}")
            results: dict[str, list[dict[str, Any]]] = {}

            def run(who: str, rps: float, port: int = port, into: dict[str, Any] = results) -> None:
                into[who] = ghz_run(port, key=KEYS[who], rps=rps, seconds=TENANTS_S)

            flood = threading.Thread(target=run, args=("flood", 10 * victim_rps))
            flood.start()
            run("victim", victim_rps)
            flood.join()
            v, f = (summarize(results[w], TENANTS_S) for w in ("victim", "flood"))
            tenants[name] = {
                "victim_success": round(v["ok"] / v["sent"], 4) if v["sent"] else None,
                "victim": v,
                "flood": f,
            }
            log(f"  victim success {tenants[name]['victim_success']}")
        out["tenant_flood"] = {"victim_rps": round(victim_rps, 1), **tenants}

        adm, base = overload["admission"], tenants["admission"]
        out["targets"] = {
            "goodput_ge_90pct": adm["goodput_over_sustainable"] >= 0.9,
            "admitted_overhead_p99_le_50ms": adm["admitted_overhead_ms"]["p99"] <= 50,
            "refusal_p99_le_5ms": adm["refusal_ms"]["p99"] <= 5,
            "refusals_carry_retry_info": adm["retry_info"]["probe_refusals"] > 0
            and adm["retry_info"]["with_retry_info"] == adm["retry_info"]["probe_refusals"],
            "victim_success_ge_99pct": (base["victim_success"] or 0) >= 0.99,
        }
        out["setup"] = {
            "upstream_latency_ms": UPSTREAM_MS,
            "sustainable": f"saturation throughput of the gateway without admission control, "
            f"closed loop, {SATURATION_CONC} in flight, {SATURATION_S:g} s, cache misses",
            "overload": f"ghz --async at 2x sustainable for {OVERLOAD_S:g} s, deadline "
            f"{DEADLINE_S:g} s; overhead = latency minus the sandbox's {UPSTREAM_MS:g} ms",
            "tenant_flood": f"victim at sustainable/5, flood at 10x that, {TENANTS_S:g} s",
            "placement": f"gateway on CPU {SERVER_CPU}; sandbox and ghz on CPU {LOADGEN_CPU}",
        }
        out["bench_wall_s"] = round(time.monotonic() - t0, 1)
        out["machine"] = machine.report()
        return out
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    print(json.dumps(main()))
