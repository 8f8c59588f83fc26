"""The data points an in-memory metric reader holds for one instrument, for tests that read
the gateway's metrics as an exporter would."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def data_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Every data point of the instrument ``name`` collected so far."""
    data = reader.get_metrics_data()
    return [
        point
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for point in m.data.data_points
    ]
