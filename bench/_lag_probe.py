"""The gateway with an event-loop lag probe beside it, for benchmarks that ask how late the loop
runs while it holds many calls open.

``python -m bench._lag_probe --lag-file FILE --config CONFIG``

A task on the gateway's own loop sleeps ``INTERVAL_S`` again and again and records how much
later than asked it wakes: the time a ready callback waits behind everything else on the loop.
Samples go to ``FILE`` as ``<CLOCK_MONOTONIC seconds> <lag ms>`` lines, written in batches
(a write per sample would itself be load), so a benchmark can cut them by the times of its
levels. The gateway is otherwise ``longread serve`` unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from longread_server import app

INTERVAL_S = 0.01
FLUSH_S = 0.5
_tasks: set[asyncio.Task[None]] = set()


async def probe(path: str) -> None:
    lines: list[str] = []
    flushed = time.monotonic()
    # Blocking writes on purpose: a few hundred bytes every FLUSH_S, cheaper than a thread hop.
    with open(path, "a") as f:  # noqa: ASYNC230
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(INTERVAL_S)
            now = time.monotonic()
            lines.append(f"{now:.4f} {(now - t0 - INTERVAL_S) * 1000:.3f}\n")
            if now - flushed >= FLUSH_S:
                f.writelines(lines)
                f.flush()
                lines.clear()
                flushed = now


def read(path: str, t0: float, t1: float) -> list[float]:
    """The lag samples (ms) taken between monotonic times ``t0`` and ``t1``."""
    out = []
    with open(path) as f:
        for line in f:
            t, lag = line.split()
            if t0 <= float(t) <= t1:
                out.append(float(lag))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lag-file", required=True)
    parser.add_argument("--config", required=True)
    a = parser.parse_args()
    start = app.start

    async def start_with_probe(cfg: Any, telemetry: Any = None) -> Any:
        gw = await start(cfg, telemetry)
        task = asyncio.get_running_loop().create_task(probe(a.lag_file))
        _tasks.add(task)
        return gw

    app.start = start_with_probe
    return app.main(a.config)


if __name__ == "__main__":
    raise SystemExit(main())
