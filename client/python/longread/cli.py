"""The ``longread`` command: serve, sandbox, demo, estimate, analyze."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from longread import cache_key
from longread.client import Client, Options, error_details
from longread.v1 import types_pb2 as pb


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _options(a: argparse.Namespace) -> Options:
    return Options(
        model=a.model,
        vendor=a.vendor,
        preference=a.prefer,
        system_prompt=a.system or "",
        temperature=a.temperature,
        max_output_tokens=a.max_output_tokens,
        max_chunk_tokens=a.chunk_tokens,
        overlap_tokens=a.overlap,
        strategy=a.strategy,
        max_cost_usd=a.max_cost,
        **({"cache": a.cache} if hasattr(a, "cache") else {}),
    )


def _client(a: argparse.Namespace) -> Client:
    return Client(a.target, api_key=a.api_key or None, timeout=a.timeout)


def _fail(err: grpc.RpcError) -> int:
    d = error_details(err)
    print(f"error: {d.code.name}: {d.message}", file=sys.stderr)
    for f, desc in d.field_violations:
        print(f"  {f}: {desc}", file=sys.stderr)
    if d.retry_after_s is not None:
        print(f"  retry after {d.retry_after_s:.1f}s", file=sys.stderr)
    return 1


def cmd_estimate(a: argparse.Namespace) -> int:
    with _client(a) as c:
        try:
            r = c.estimate(_read(a.file), a.question, options=_options(a))
        except grpc.RpcError as e:
            return _fail(e)
    if a.json:
        print(json_format.MessageToJson(r, indent=None))
        return 0
    p = r.plan
    print(f"model      {p.model.vendor}/{p.model.model} (context {p.model.context_window:,})")
    exact = "exact" if p.tokens_exact else f"estimate, +/-{p.token_error:.0%}"
    print(f"tokens     {p.document_tokens:,} ({exact})")
    print(
        f"strategy   {pb.Strategy.Name(p.strategy).removeprefix('STRATEGY_').lower()}"
        f" - {len(p.chunks)} chunk(s), {p.map_calls} map, {p.collapse_calls} collapse, "
        f"{p.reduce_calls} reduce"
    )
    print(f"cost       ${p.estimated_cost.total_usd:.4f} (upper bound)")
    print("\ncandidates (cheapest first):")
    for f in r.candidates:
        fit = "fits" if f.fits_single_pass else f"{f.calls} calls"
        print(
            f"  {f.model.vendor + '/' + f.model.model:36} {fit:>10}  "
            f"${f.estimated_cost.total_usd:.4f}"
        )
    for w in r.warnings:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(1, total)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def cmd_analyze(a: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    progress = err.isatty() or a.progress
    with _client(a) as c:
        try:
            if a.json:
                r = c.analyze(_read(a.file), a.question, options=_options(a))
                print(json_format.MessageToJson(r, indent=None))
                return 0
            done: dict[int, int] = {}
            totals: dict[int, int] = {}
            answering = False
            for ev in c.stream(_read(a.file), a.question, options=_options(a)):
                kind = ev.WhichOneof("event")
                if kind == "plan":
                    p = ev.plan
                    print(
                        f"plan: {p.model.vendor}/{p.model.model}, {p.document_tokens:,} tokens, "
                        f"{len(p.chunks)} chunk(s), ~${p.estimated_cost.total_usd:.4f}",
                        file=err,
                    )
                elif kind == "chunk_started" and ev.chunk_started.stage in (
                    pb.STAGE_MAP,
                    pb.STAGE_COLLAPSE,
                ):
                    totals[ev.chunk_started.stage] = ev.chunk_started.of
                elif kind == "chunk_done" and ev.chunk_done.stage in totals:
                    stage = ev.chunk_done.stage
                    done[stage] = done.get(stage, 0) + 1
                    if progress:
                        name = pb.Stage.Name(stage).removeprefix("STAGE_").lower()
                        end = "\n" if done[stage] == totals[stage] else ""
                        print(
                            f"\r{name:8} {_bar(done[stage], totals[stage])}",
                            end=end,
                            file=err,
                            flush=True,
                        )
                elif kind == "delta":
                    if not answering:
                        answering = True
                    out.write(ev.delta.text)
                    out.flush()
                elif kind == "warning":
                    print(f"\nwarning: {ev.warning.message}", file=err)
                elif kind == "result":
                    r = ev.result
                    if not answering:
                        out.write(r.text)
                    out.write("\n")
                    u = r.usage
                    cache = pb.CacheStatus.Name(r.cache_status).removeprefix("CACHE_STATUS_")
                    print(
                        f"usage: {u.input_tokens:,} in / {u.output_tokens:,} out in "
                        f"{u.calls} call(s), ${r.cost.total_usd:.4f}, cache {cache.lower()}, "
                        f"{r.timings.total.ToMilliseconds() / 1000:.2f}s",
                        file=err,
                    )
        except grpc.RpcError as e:
            return _fail(e)
    return 0


def cmd_health(a: argparse.Namespace) -> int:
    """Exit 0 when the server's gRPC health service says SERVING (container health checks)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(a.target) as ch:
        try:
            stub: Any = health_pb2_grpc.HealthStub(ch)  # the stubs' types omit Check
            r = stub.Check(health_pb2.HealthCheckRequest(service=a.service), timeout=a.timeout)
        except grpc.RpcError as e:
            print(f"unhealthy: {e.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
    print(status)
    return 0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1


def cmd_serve(a: argparse.Namespace) -> int:
    from longread_server.app import main

    listen = f"{a.host}:{a.port}" if a.port is not None else None
    return main(a.config, listen)


_NO_SANDBOX = "longread: the vendor emulator is not installed (pip install longread-sandbox)"


def cmd_sandbox(a: argparse.Namespace) -> int:
    try:
        from longread_sandbox import main
    except ModuleNotFoundError as e:
        if e.name != "longread_sandbox":
            raise
        print(_NO_SANDBOX, file=sys.stderr)
        return 2
    return main(a.rest)


def cmd_demo(a: argparse.Namespace) -> int:
    try:
        from longread_sandbox.demo import main
    except ModuleNotFoundError as e:
        if e.name != "longread_sandbox":
            raise
        print(_NO_SANDBOX, file=sys.stderr)
        return 2
    return main()


def _common(p: argparse.ArgumentParser, cache: bool) -> None:
    p.add_argument("file", help="the document (a path, or - for standard input)")
    p.add_argument("-q", "--question", required=True, help="the instruction or question")
    p.add_argument("--target", default=os.environ.get("LONGREAD_TARGET", "localhost:50051"))
    p.add_argument("--api-key", default=os.environ.get("LONGREAD_API_KEY", ""))
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p.add_argument("--model", default="")
    p.add_argument("--vendor", default="")
    p.add_argument("--prefer", default="", choices=["", "cheapest", "largest_context"])
    p.add_argument("--system", default="")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--max-output-tokens", type=int, default=None)
    p.add_argument("--chunk-tokens", type=int, default=0)
    p.add_argument("--overlap", type=int, default=0)
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "single_pass", "map_reduce", "refine", "select"],
    )
    p.add_argument("--max-cost", type=float, default=0.0, help="fail if the estimate exceeds it")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    if cache:
        p.add_argument(
            "--cache",
            default="default",
            choices=["default", "bypass", "no_store", "only_if_cached"],
        )
        p.add_argument("--progress", action="store_true", help="progress bars even when piped")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="longread", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", default=None, help="TOML config file")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=None)
    s.set_defaults(fn=cmd_serve)
    sb = sub.add_parser("sandbox", help="run the vendor emulator alone", add_help=False)
    sb.add_argument("rest", nargs=argparse.REMAINDER)
    sb.set_defaults(fn=cmd_sandbox)
    h = sub.add_parser("health", help="check a server's gRPC health service")
    h.add_argument("--target", default=os.environ.get("LONGREAD_TARGET", "localhost:50051"))
    h.add_argument("--service", default="")
    h.add_argument("--timeout", type=float, default=3.0)
    h.set_defaults(fn=cmd_health)
    d = sub.add_parser("demo", help="server + sandbox + an analysis of a sample document")
    d.set_defaults(fn=cmd_demo)
    e = sub.add_parser("estimate", help="tokens, plan, models and cost of a document")
    _common(e, cache=False)
    e.set_defaults(fn=cmd_estimate)
    an = sub.add_parser("analyze", help="analyse a document, streaming progress and answer")
    _common(an, cache=True)
    an.set_defaults(fn=cmd_analyze)
    cache_key.register(sub)  # cache-key: the response-cache key of a vendor payload
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sandbox"]:
        # The emulator parses its own flags: argparse's REMAINDER would reject a leading option
        # (``longread sandbox --port 0``) instead of passing it on.
        a = argparse.Namespace(fn=cmd_sandbox, rest=args[1:])
    else:
        a = ap.parse_args(args)
    try:
        rc: int = a.fn(a)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
