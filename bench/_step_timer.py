"""The gateway with some of its own steps timed where they run, for ``bench.cold_cache``.

``python -m bench._step_timer --times-file FILE --config CONFIG``

Each step (a function or method named in ``STEPS``) is wrapped so that every call's time goes
into a list of its own; when the gateway has stopped (SIGTERM, as ``longread serve``), the
median of each list, without its first ``SKIP`` calls (the warm-up), is written to ``FILE`` as
JSON: ``{step: {"median_us": ..., "calls": ...}}``. The gateway is otherwise ``longread serve``
unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from longread_server import app
from longread_server.api import convert
from longread_server.calls.cache import ResponseCache
from longread_server.run.planning import Planning

SKIP = 300
STEPS: dict[str, tuple[Any, str]] = {
    "parse_request": (convert, "parse_request"),
    "plan_now": (Planning, "plan_now"),
    "key_now": (ResponseCache, "key_now"),
    "result": (convert, "result"),
}


def _timed(original: Callable[..., Any], into: list[int]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter_ns() - t0)

    return timed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--times-file", required=True)
    parser.add_argument("--config", required=True)
    a = parser.parse_args()
    times: dict[str, list[int]] = {}
    for name, (owner, attr) in STEPS.items():
        setattr(owner, attr, _timed(getattr(owner, attr), times.setdefault(name, [])))
    code = app.main(a.config)
    out = {
        name: {"median_us": round(statistics.median(kept) / 1000, 1), "calls": len(kept)}
        for name, samples in times.items()
        if (kept := samples[SKIP:])
    }
    with open(a.times_file, "w") as f:
        json.dump(out, f)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
