"""One record per RPC: its outcome as a metric and as one structured log line.

Filled as the request goes (tenant, model, result) and finished exactly once with the status
code. The log line carries counts and identifiers only — never document text, prompts,
answers or keys.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from longread_server.run.events import JobResult
from longread_server.telemetry import Telemetry

log = logging.getLogger("longread.access")


@dataclass(slots=True)
class RpcRecord:
    method: str
    tel: Telemetry
    access_log: bool = True
    started: float = field(default_factory=time.perf_counter)
    tenant: str = ""
    vendor: str = ""
    model: str = ""
    document_tokens: int = 0
    result: JobResult | None = None
    done: bool = False

    def finish(self, code: str, reason: str = "") -> None:
        if self.done:
            return
        self.done = True
        seconds = time.perf_counter() - self.started
        inst = self.tel.instruments
        inst.rpc_duration.record(seconds, {"rpc.method": self.method, "rpc.grpc.status_code": code})
        r = self.result
        if r is not None:
            attrs = {"longread.tenant": self.tenant, "gen_ai.request.model": self.model}
            if r.cost.total_usd:
                inst.cost.add(r.cost.total_usd, attrs)
            if r.timings.first_token_s:
                inst.time_to_first_token.record(r.timings.first_token_s, attrs)
        if not self.access_log:
            return
        fields: dict[str, object] = {
            "rpc": self.method,
            "code": code,
            "ms": round(seconds * 1000, 2),
            "tenant": self.tenant,
        }
        if reason:
            fields["reason"] = reason
        if self.model:
            fields["model"] = f"{self.vendor}/{self.model}"
        if self.document_tokens:
            fields["document_tokens"] = self.document_tokens
        if r is not None:
            fields.update(
                strategy=r.plan.strategy.value,
                calls=r.usage.calls,
                input_tokens=r.usage.input_tokens,
                output_tokens=r.usage.output_tokens,
                cost_usd=round(r.cost.total_usd, 6),
                cache=r.cache_status.value,
            )
        log.info("%s %s", self.method, code, extra={"fields": fields})
