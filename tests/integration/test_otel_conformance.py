"""The OpenTelemetry conformance suite: for each row of tests/otel_conformance.py, the stock
SDK and ``longread serve``, given the same OTEL_* environment, must agree on every compared
property (the README's table; ``python -m tests.otel_conformance`` prints it).

The rows selected for the session run together, a few at a time, the first time a test asks
for its result: each row is two subprocesses that mostly start up and wait on timers and
sockets, so running them one test at a time would take minutes.
"""

from __future__ import annotations

import pytest

from tests.otel_conformance import ROWS, RowResult, run_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> dict[str, RowResult]:
    selected = {
        item.callspec.params["row_id"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and hasattr(item, "callspec")
        and "row_id" in item.callspec.params
    }
    return run_rows([r for r in ROWS if r.id in selected])


@pytest.mark.timeout(600)  # the first test runs every selected row
@pytest.mark.parametrize("row_id", [r.id for r in ROWS])
def test_sdk_and_gateway_agree(row_id: str, results: dict[str, RowResult]) -> None:
    result = results[row_id]
    if not result.agree:
        pytest.fail(result.explain(), pytrace=False)
