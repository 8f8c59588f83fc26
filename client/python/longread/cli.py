"""The ``longread`` command: serve, sandbox, demo, health, estimate, analyze.

Failures are one line on standard error, ``longread: error: <what>; hint: <what to do>``, and
the exit code says whose they are: 2 when the command line or the input was refused before any
call, 1 when the gateway failed the call or could not be reached.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn, TextIO

import grpc
from google.protobuf import json_format

from longread import cache_key
from longread.client import Client, ErrorDetails, Options, error_details
from longread.v1 import types_pb2 as pb

USAGE = 2  # the command line or the input was refused; nothing was sent
FAILED = 1  # the gateway answered with an error, or could not be reached


class CliError(Exception):
    """A failure reported as one line with a hint, and the exit code it ends with."""

    def __init__(self, what: str, hint: str, code: int = USAGE) -> None:
        super().__init__(what)
        self.what, self.hint, self.code = what, hint, code


def _one_line(s: str) -> str:
    return " ".join(s.split())


def _report(e: CliError) -> int:
    line = f"longread: error: {_one_line(e.what)}"
    if e.hint:
        line += f"; hint: {_one_line(e.hint)}"
    print(line, file=sys.stderr)
    return e.code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the same single line as every other failure."""

    def error(self, message: str) -> NoReturn:
        sys.exit(_report(CliError(message, f"see `{self.prog} --help`")))


def _version() -> str:
    try:
        return metadata.version("longread")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decode(data: bytes, name: str, encoding: str | None) -> str:
    """The document as the gateway should see it: decoded, but with line endings untouched
    (text-mode reading would turn CRLF into LF and shift every offset in the result). A
    byte-order mark picks the encoding when none is given and is not part of the text."""
    if encoding is None:
        encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except LookupError:
        raise CliError(f"unknown encoding {encoding!r}", "pass e.g. --encoding cp1252") from None
    except UnicodeDecodeError as e:
        raise CliError(
            f"{name}: not valid {e.encoding} (byte 0x{data[e.start]:02x} at offset {e.start})",
            "pass the file's encoding, e.g. --encoding cp1252 or --encoding latin-1",
        ) from None


def _read(path: str, encoding: str | None = None) -> str:
    if path == "-":
        return _decode(sys.stdin.buffer.read(), "standard input", encoding)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", "check the path, or pass - to read stdin") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory", "pass a file, or - to read stdin") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied", "check the file's permissions") from None
    return _decode(data, path, encoding)


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
        **(
            {"semantic": a.semantic, "min_similarity": a.min_similarity}
            if hasattr(a, "semantic")
            else {}
        ),
    )


def _pem(path: str, flag: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(
            f"{flag} {path}: {e.strerror}", f"pass a readable PEM file to {flag}"
        ) from None


def _tls(a: argparse.Namespace) -> tuple[bool, bytes | None, bytes | None, bytes | None]:
    """(secure, CA, client certificate, client key) from the flags or their environment."""
    ca, cert, key = _pem(a.ca, "--ca"), _pem(a.cert, "--cert"), _pem(a.key, "--key")
    if (cert is None) != (key is None):
        raise CliError("--cert and --key go together", "pass both, or neither")
    return bool(a.tls or ca or cert), ca, cert, key


def _client(a: argparse.Namespace) -> Client:
    secure, ca, cert, key = _tls(a)
    return Client(
        a.target,
        api_key=a.api_key or None,
        timeout=a.timeout,
        secure=secure,
        root_certificates=ca,
        cert_chain=cert,
        private_key=key,
    )


_HINTS = {
    grpc.StatusCode.INVALID_ARGUMENT: "fix the request's flags (see `longread {cmd} --help`)",
    grpc.StatusCode.FAILED_PRECONDITION: "fix the request's flags (see `longread {cmd} --help`)",
    grpc.StatusCode.OUT_OF_RANGE: "fix the request's flags (see `longread {cmd} --help`)",
    grpc.StatusCode.UNAUTHENTICATED: "pass --api-key or set LONGREAD_API_KEY",
    grpc.StatusCode.PERMISSION_DENIED: "use an API key of a tenant allowed to do this",
    grpc.StatusCode.DEADLINE_EXCEEDED: "raise --timeout, or pass a smaller document",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "retry later, or raise the limit named above",
}


def _rpc_error(err: grpc.RpcError, a: argparse.Namespace) -> CliError:
    d: ErrorDetails = error_details(err)
    if d.code == grpc.StatusCode.UNAVAILABLE and d.retry_after_s is None and not d.reason:
        # No rich status: grpc itself gave up on the connection, so no gateway answered.
        return CliError(
            f"cannot reach a gateway at {a.target} ({d.message})",
            "start one with `longread serve`, or pass --target (or set LONGREAD_TARGET)",
            FAILED,
        )
    what = f"{d.code.name}: {d.message}"
    # The gateway's message usually quotes its violations already (and in full, where the
    # detail is clipped); say each thing once.
    extra = [f"{f}: {desc}" for f, desc in d.field_violations if f"{f}: " not in d.message]
    if extra:
        what += " (" + "; ".join(extra) + ")"
    hint = _HINTS.get(d.code, "the gateway's log has the details of this request")
    if d.retry_after_s is not None:
        hint = f"retry after {d.retry_after_s:.1f}s"
    return CliError(what, hint.format(cmd=a.cmd), FAILED)


def cmd_estimate(a: argparse.Namespace) -> int:
    text = _read(a.file, a.encoding)
    with _client(a) as c:
        try:
            r = c.estimate(text, a.question, options=_options(a))
        except grpc.RpcError as e:
            raise _rpc_error(e, a) from None
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
    text = _read(a.file, a.encoding)
    with _client(a) as c:
        try:
            if a.json:
                r = c.analyze(text, a.question, options=_options(a))
                print(json_format.MessageToJson(r, indent=None))
                return 0
            done: dict[int, int] = {}
            totals: dict[int, int] = {}
            answering = False
            for ev in c.stream(text, a.question, options=_options(a)):
                kind = ev.WhichOneof("event")
                if kind == "plan":
                    p = ev.plan
                    print(
                        f"plan: {p.model.vendor}/{p.model.model}, {p.document_tokens:,} tokens, "
                        f"{len(p.chunks)} chunk(s), ~${p.estimated_cost.total_usd:.4f}",
                        file=err,
                    )
                elif kind == "chunk_started":
                    # Every stage has a bar (map, collapse, reduce, refine), not only map.
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
                    if r.HasField("semantic_match"):
                        m = r.semantic_match
                        print(
                            f"reused the answer to {m.question!r} (similarity {m.similarity:.3f})",
                            file=err,
                        )
        except grpc.RpcError as e:
            raise _rpc_error(e, a) from None
    return 0


def cmd_health(a: argparse.Namespace) -> int:
    """Exit 0 when the server's gRPC health service says SERVING (container health checks)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    secure, ca, cert, key = _tls(a)
    creds = grpc.ssl_channel_credentials(ca, key, cert) if secure else None
    ch = grpc.secure_channel(a.target, creds) if creds else grpc.insecure_channel(a.target)
    with ch:
        try:
            stub: Any = health_pb2_grpc.HealthStub(ch)  # the stubs' types omit Check
            r = stub.Check(health_pb2.HealthCheckRequest(service=a.service), timeout=a.timeout)
        except grpc.RpcError as e:
            raise _rpc_error(e, a) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
    print(status)
    if r.status != health_pb2.HealthCheckResponse.SERVING:
        raise CliError(f"{a.target} is {status}", "the gateway's log says why", FAILED)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from longread_server.app import main

    listen = f"{a.host}:{a.port}" if a.port is not None else None
    return main(a.config, listen)


_NO_SANDBOX = CliError(
    "the vendor emulator is not installed", "pip install longread-sandbox", USAGE
)


def _sandbox(module: str) -> Any:
    """A module of the emulator's package, or the one-line error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != "longread_sandbox":
            raise
        raise _NO_SANDBOX from None


def cmd_sandbox(a: argparse.Namespace) -> int:
    return int(_sandbox("longread_sandbox").main(a.rest))


def cmd_demo(a: argparse.Namespace) -> int:
    return int(_sandbox("longread_sandbox.demo").main())


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default=os.environ.get("LONGREAD_TARGET", "localhost:50051"),
        help="the gateway's host:port (env LONGREAD_TARGET)",
    )
    env = os.environ.get
    p.add_argument(
        "--tls",
        action="store_true",
        default=env("LONGREAD_TLS", "") not in ("", "0"),
        help="TLS with the system's CAs (env LONGREAD_TLS=1; implied by --ca or --cert)",
    )
    p.add_argument(
        "--ca",
        default=env("LONGREAD_TLS_CA", ""),
        help="PEM CA to verify the gateway with (env LONGREAD_TLS_CA)",
    )
    p.add_argument(
        "--cert",
        default=env("LONGREAD_TLS_CERT", ""),
        help="PEM client certificate for mTLS, with --key (env LONGREAD_TLS_CERT)",
    )
    p.add_argument(
        "--key",
        default=env("LONGREAD_TLS_KEY", ""),
        help="PEM private key of --cert (default: env LONGREAD_TLS_KEY)",
    )


def _common(p: argparse.ArgumentParser, cache: bool) -> None:
    p.add_argument("file", help="the document (a path, or - for standard input)")
    p.add_argument("-q", "--question", required=True, help="the instruction or question")
    p.add_argument(
        "--encoding",
        default=None,
        help="the file's encoding (default: from its byte-order mark, else UTF-8)",
    )
    _target(p)
    p.add_argument(
        "--api-key",
        default=os.environ.get("LONGREAD_API_KEY", ""),
        help="the tenant's API key (default: env LONGREAD_API_KEY, never shown)",
    )
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p.add_argument("--model", default="", help="the model; empty lets the gateway choose")
    p.add_argument("--vendor", default="", help="only this vendor's models")
    p.add_argument(
        "--prefer",
        default="",
        choices=["", "cheapest", "largest_context"],
        help="how the gateway chooses a model when --model is not given",
    )
    p.add_argument("--system", default="", help="a system prompt; empty keeps the gateway's")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (model default)"
    )
    p.add_argument("--max-output-tokens", type=int, default=None, help="cap on each call's output")
    p.add_argument(
        "--chunk-tokens", type=int, default=0, help="largest chunk in tokens (0: the gateway's)"
    )
    p.add_argument("--overlap", type=int, default=0, help="tokens each chunk repeats")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "single_pass", "map_reduce", "refine", "select"],
        help="how a document too large for one call is split",
    )
    p.add_argument(
        "--max-cost", type=float, default=0.0, help="fail if the estimate exceeds it (0: no cap)"
    )
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    if cache:
        p.add_argument(
            "--cache",
            default="default",
            choices=["default", "bypass", "no_store", "only_if_cached"],
            help="the response cache's use",
        )
        p.add_argument(
            "--semantic",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="reuse the answer to an earlier question that means the same (default: as "
            "the tenant is configured)",
        )
        p.add_argument(
            "--min-similarity",
            type=float,
            default=0.0,
            help="the similarity a semantic reuse needs (0: the gateway's)",
        )
        p.add_argument("--progress", action="store_true", help="progress bars even when piped")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default in its help; an empty one shown as such rather than as blank."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        h = action.help or ""
        if "default" in h or action.required or not action.option_strings:
            return h
        if action.default in ("", None):
            return h + " (default: none)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = _Help
    ap = _Parser(prog="longread", description=__doc__, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"longread {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("serve", help="run the gateway", formatter_class=fmt)
    s.add_argument("--config", default=None, help="TOML config file")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=None, help="port (the config's when not given)")
    s.set_defaults(fn=cmd_serve)
    # Listed for the overview only: main() hands everything after `sandbox` to the emulator's
    # own parser, which owns its flags and its --help.
    sub.add_parser(
        "sandbox", help="run the vendor emulator alone (`longread sandbox --help`)", add_help=False
    )
    h = sub.add_parser("health", help="check a server's gRPC health service", formatter_class=fmt)
    _target(h)
    h.add_argument("--service", default="", help='"" (readiness, the default) or "liveness"')
    h.add_argument("--timeout", type=float, default=3.0, help="deadline in seconds")
    h.set_defaults(fn=cmd_health)
    d = sub.add_parser(
        "demo", help="server + sandbox + an analysis of a sample document", formatter_class=fmt
    )
    d.set_defaults(fn=cmd_demo)
    e = sub.add_parser(
        "estimate", help="tokens, plan, models and cost of a document", formatter_class=fmt
    )
    _common(e, cache=False)
    e.set_defaults(fn=cmd_estimate)
    an = sub.add_parser(
        "analyze", help="analyse a document, streaming progress and answer", formatter_class=fmt
    )
    _common(an, cache=True)
    an.set_defaults(fn=cmd_analyze)
    cache_key.register(sub)  # cache-key: the response-cache key of a vendor payload
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sandbox"]:
        # The emulator parses its own flags: argparse's REMAINDER would reject a leading option
        # (``longread sandbox --port 0``) instead of passing it on.
        a = argparse.Namespace(cmd="sandbox", fn=cmd_sandbox, rest=args[1:])
    else:
        a = build_parser().parse_args(args)
    try:
        rc: int = a.fn(a)
    except CliError as e:
        return _report(e)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
