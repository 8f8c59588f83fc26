"""Logs: one JSON object per line, carrying the trace and span of the context they are
written in."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from opentelemetry import trace

from longread_server.telemetry import redact


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span of the record's context. A logged
    exception's message is written only where ``telemetry.redact`` allows it."""

    def __init__(self, record_content: bool = False) -> None:
        super().__init__()
        self.record_content = record_content

    def formatException(self, ei: Any) -> str:
        _, exc, _ = ei
        if exc is None:
            return super().formatException(ei)
        return redact.stacktrace(exc, self.record_content).rstrip("\n")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(json_logs: bool, level: str = "INFO", record_content: bool = False) -> None:
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter(record_content))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO: one line per upstream call on the hot path, and the
    # access log already has what matters.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
