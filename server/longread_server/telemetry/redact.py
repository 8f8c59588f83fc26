"""What of an exception telemetry may record: its type and its frames always; its message only
when it is one of the gateway's own errors or content recording is on.

The gateway's own errors (``domain``) are worded from identifiers, numbers and field names,
never from a request's or an upstream's text. Any other exception can quote what it was given:
a decoder the bytes it could not read, a ``KeyError`` its key, a library the body it could not
parse. That can be a document's text, so spans and log lines carry such a message only when the
operator has opted in to content (``telemetry.record_content``).
"""

from __future__ import annotations

import traceback

from longread_server.domain import (
    CallRejected,
    InvalidRequest,
    ModelCallFailed,
    OverRequestBudget,
    UpstreamError,
)

_WORDED_BY_US = (UpstreamError, ModelCallFailed, CallRejected, InvalidRequest, OverRequestBudget)


def message(exc: BaseException, record_content: bool) -> str | None:
    """The exception's message, or None where it may not be recorded."""
    if record_content or isinstance(exc, _WORDED_BY_US):
        return str(exc)
    return None


def describe(exc: BaseException, record_content: bool) -> str:
    """``Type: message`` as the SDK words a span status, or the type alone."""
    text = message(exc, record_content)
    name = type(exc).__name__
    return name if text is None else f"{name}: {text}"


def stacktrace(exc: BaseException, record_content: bool) -> str:
    """The traceback as Python prints it, causes first, each exception's message in it only
    where :func:`message` allows it."""
    if record_content:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    parts = []
    for e in reversed(chain):
        frames = "".join(traceback.format_tb(e.__traceback__))
        text = message(e, record_content)
        last = f"{type(e).__module__}.{type(e).__qualname__}"
        last += f": {text}" if text is not None else " (message not recorded)"
        parts.append(f"Traceback (most recent call last):\n{frames}{last}\n")
    return "\nDuring handling of the above, another exception occurred:\n\n".join(parts)
