"""The transport's tests run on asyncio's loop and on uvloop, the loop ``longread serve`` runs
on: its connections are asyncio protocols driven by the loop's own transports, and the two
loops' transports must drive them alike. The other tests here keep asyncio's loop alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

_BOTH: Mapping[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
_ASYNCIO_ONLY: Mapping[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return _BOTH if item.path.name == "test_transport.py" else _ASYNCIO_ONLY
