"""Recordings handed to the OpenTelemetry SDK in batches: nothing lost, nothing late for a
collection, and exemplars (which need each recording's context) left to go one by one."""

from __future__ import annotations

import threading
from typing import Any

from longread_server.config import TelemetryConfig
from longread_server.telemetry import setup
from longread_server.telemetry.metrics import (
    Instruments,
    MeasurementBatch,
    _BatchedCounter,
    _BatchedHistogram,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def _instruments(size: int = 256) -> tuple[Instruments, MeasurementBatch, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    batch = MeasurementBatch(size)
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    return Instruments(meter, batch), batch, reader


def test_a_collection_sees_every_recording_made_before_it() -> None:
    inst, _, reader = _instruments()
    inst.rpc_duration.record(0.25, {"rpc.method": "Analyze"})
    inst.rpc_duration.record(0.75, {"rpc.method": "Analyze"})
    inst.cost.add(0.5, {"longread.tenant": "acme"})
    points = _points(reader)
    (hist,) = points["longread.rpc.duration"]
    assert (hist.count, hist.sum, dict(hist.attributes)) == (2, 1.0, {"rpc.method": "Analyze"})
    (cost,) = points["longread.cost.usd"]
    assert cost.value == 0.5
    (batched,) = points["longread.telemetry.batched"]
    assert batched.value == 3
    inst.cost.add(0.25, {"longread.tenant": "acme"})
    (cost,) = _points(reader)["longread.cost.usd"]
    assert cost.value == 0.75  # cumulative, as before


def test_a_full_batch_goes_to_the_sdk_from_the_request_that_fills_it() -> None:
    inst, batch, reader = _instruments(size=4)
    for _ in range(3):
        inst.cache_requests.add(1, {"result": "miss"})
    assert len(batch._items) == 3
    inst.cache_requests.add(1, {"result": "miss"})
    assert len(batch._items) == 0
    (requests,) = _points(reader)["longread.cache.requests"]
    assert requests.value == 4


def test_recordings_from_another_thread_during_collections_are_all_counted() -> None:
    inst, _, reader = _instruments(size=64)
    done = threading.Event()

    def record() -> None:
        for _ in range(20_000):
            inst.upstream_errors.add(1, {"error.type": "timeout"})
        done.set()

    t = threading.Thread(target=record)
    t.start()
    while not done.is_set():
        _points(reader)
    t.join()
    (errors,) = _points(reader)["longread.upstream.errors"]
    assert errors.value == 20_000


def test_with_exemplars_recordings_go_one_by_one() -> None:
    reader = InMemoryMetricReader()
    batched = setup(TelemetryConfig(metrics=True, prometheus=False), metric_readers=[reader])
    assert isinstance(batched.instruments.rpc_duration, _BatchedHistogram)
    assert isinstance(batched.instruments.cost, _BatchedCounter)
    cfg = TelemetryConfig(metrics=True, prometheus=False, exemplars=True)
    direct = setup(cfg, metric_readers=[InMemoryMetricReader()])
    assert not isinstance(direct.instruments.rpc_duration, _BatchedHistogram)
    assert not isinstance(direct.instruments.cost, _BatchedCounter)
    batched.shutdown()
    direct.shutdown()
