"""``python -m longread_sandbox`` / ``longread sandbox``: run the emulator alone.

Prints one line with the listening URL once it is ready (``--port 0`` picks a free port, so a
parent process reads the line to learn it), then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .emulator import Sandbox
from .faults import Fault
from .settings import SandboxConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longread sandbox",
        description="Local OpenAI + Anthropic API emulator with fault injection.",
    )
    defaults = SandboxConfig()
    add = parser.add_argument
    add("--host", default=defaults.host, help="interface to bind (default %(default)s)")
    add("--port", type=int, default=8089, help="port, 0 for any free one (default %(default)s)")
    add("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    add("--latency-ms", type=float, default=0.0, help="time from arrival to every response")
    add("--ttft-ms", type=float, default=0.0, help="streaming: delay before the first event")
    add("--tokens-per-s", type=float, default=0.0, help="streaming pace, 0 = unlimited")
    add("--fault-rate", type=float, default=0.0, help="share of model requests that fail (0..1)")
    add("--fault-kind", default=defaults.fault_kind, help="fault for --fault-rate (e.g. 429)")
    add("--script", default="", help="comma-separated faults for the next requests, ok = none")
    add("--seed", type=int, default=0, help="RNG seed for --fault-rate")
    add("--retry-after-ms", type=float, default=defaults.retry_after_ms, help="429/503/529 hint")
    add("--hang-max-s", type=float, default=defaults.hang_max_s, help="timeout fault give-up")
    add("--delta-tokens", type=int, default=defaults.delta_tokens, help="tokens per delta")
    add("--log-level", default="WARNING", help="Python logging level")
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Build and validate a config; raises ``ValueError`` with a readable message."""
    config = SandboxConfig(host=args.host, port=args.port)
    Fault.parse(args.fault_kind)
    script = [s.strip() for s in args.script.split(",")] if args.script else []
    config.update(
        {
            "api_key": args.api_key,
            "latency_ms": args.latency_ms,
            "ttft_ms": args.ttft_ms,
            "tokens_per_s": args.tokens_per_s,
            "fault_rate": args.fault_rate,
            "fault_kind": args.fault_kind,
            "script": script,
            "seed": args.seed,
            "retry_after_ms": args.retry_after_ms,
            "hang_max_s": args.hang_max_s,
            "delta_tokens": args.delta_tokens,
        }
    )
    return config


async def serve(config: SandboxConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    sandbox = Sandbox(config)
    await sandbox.start()
    print(f"longread sandbox listening on {sandbox.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"longread sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"longread sandbox: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
