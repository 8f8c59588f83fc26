"""The gateway with none of its pipeline's stages, for ``bench.overhead``: how far from the floor
the gateway stays with every mechanism of the call pipeline taken out.

``python -m bench._no_stages --config CONFIG``

``longread serve`` unchanged but for ``pipeline_stages``, which here assembles no stage: no
response cache, single-flight, budget, rate limits, fallback, retry, hedge, circuit breaker or
attempt timeouts. What is left is what every RPC does around its model call (authentication,
admission, validation, planning with a token count, the job and its events, conversion,
telemetry) and the vendor layer (adapter and transport). Between ``floor_vendor`` (the floor
through the same vendor layer) and ``ours``, it splits the gateway's overhead into what the
stages cost and what the rest costs.
"""

from __future__ import annotations

import argparse
from typing import Any

from longread_server import app
from longread_server.calls.pipeline import CallStage


def _none(*args: Any, **kwargs: Any) -> list[CallStage]:
    return []


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    a = parser.parse_args()
    # The name app.py assembles its pipeline with (imported there, not re-exported).
    app.pipeline_stages = _none  # type: ignore[attr-defined]
    return app.main(a.config)


if __name__ == "__main__":
    raise SystemExit(main())
