"""The OpenTelemetry conformance suite: for each row of tests/otel_conformance.py, the stock
SDK and ``longread serve``, given the same OTEL_* environment, must agree on every compared
property (``python -m tests.otel_conformance`` prints the table as Markdown).

The rows selected for the session run together, a few at a time, the first time a test asks
for its result: each row is two subprocesses that mostly start up and wait on timers and
sockets, so running them one test at a time would take minutes.
"""

from __future__ import annotations

import pytest

from tests.otel_conformance import ROWS, RowResult, run_rows, signals

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
    # The reference failing to run is the harness's fault, whatever the gateway did: two
    # sides failing alike must not pass as agreement.
    ref = result.reference
    assert ref.exit_code == 0 and not ref.error, f"the reference did not run:\n{ref.stderr}"
    if not result.agree:
        pytest.fail(result.explain(), pytrace=False)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("row_id", ["baseline"])
def test_the_receiver_sees_the_reference(row_id: str, results: dict[str, RowResult]) -> None:
    """The harness itself: with the base environment the stock SDK's three signals reach the
    receiver, decoded. Were the receiver deaf, every "nothing received" would agree."""
    ref = results[row_id].reference
    assert signals(ref) == "traces,metrics,logs"
    assert any(
        s.name == "longread.v1.AnalysisService/Analyze" for r in ref.requests for s in r.spans()
    )
    assert {m.name for r in ref.requests for m in r.metrics()} >= {"longread.rpc.duration"}
    assert any(
        rec.body.string_value == "analysis done" for r in ref.requests for rec in r.log_records()
    )
