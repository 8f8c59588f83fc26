"""The one interface every vendor adapter offers to the call pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from longread_server.domain import LlmEvent, LlmRequest, VendorKind


class VendorAdapter(Protocol):
    """Speaks one vendor's wire protocol over the shared httpx client (``vendors/transport.py``).

    ``call`` yields ``TextDelta``s in order, then exactly one ``Finish``; any failure is an
    ``UpstreamError`` (``streamed=True`` once text was yielded). A non-streaming request
    (``req.stream`` False) yields the whole text as one ``TextDelta`` (if non-empty), then
    ``Finish``. ``timeout`` is the overall seconds left for the call (None: the client's own
    timeouts). Closing the iterator early, or cancelling the task, closes the response.
    """

    name: str  # the upstream's configured name, e.g. "openai", "deepseek"
    kind: VendorKind
    # The largest sampling temperature the vendor documents; a request above it is refused
    # before any call rather than sent to fail (or, worse, be clamped unseen).
    max_temperature: float

    def build_payload(self, req: LlmRequest) -> dict[str, Any]:
        """The exact JSON body ``call`` sends for ``req`` (cache keys are derived from it)."""
        ...

    def call(self, req: LlmRequest, *, timeout: float | None = None) -> AsyncIterator[LlmEvent]:
        """Run ``req`` and yield its events."""
        ...
