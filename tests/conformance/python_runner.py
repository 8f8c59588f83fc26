"""The Python conformance runner: runs every case with the Python client (``longread.client``).

Usage (from the repository root)::

    CONFORMANCE_KEY_VALID=... python -m tests.conformance.python_runner \
        --target 127.0.0.1:50051 --cases tests/conformance/cases --nonce abc

Prints one JSON line per case (``{"case", "ok", "failures", "ms"}``); exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from longread.client import Client, error_details
from longread.v1 import analysis_service_pb2 as svc

from tests.conformance.checks import check

DEFAULT_DEADLINE_MS = 30_000
_REQUESTS: dict[str, type[Message]] = {
    "Estimate": svc.EstimateRequest,
    "Analyze": svc.AnalyzeRequest,
    "Stream": svc.StreamRequest,
}


def to_json(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _domain(err: grpc.RpcError) -> str:
    """The ErrorInfo domain (``error_details`` does not decode it)."""
    call: Any = err
    for key, value in call.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return str(info.domain)
    return ""


def error_json(err: grpc.RpcError) -> tuple[str, dict[str, Any]]:
    d = error_details(err)
    out: dict[str, Any] = {
        "message": d.message,
        "reason": d.reason,
        "domain": _domain(err),
        "metadata": dict(d.metadata),
        "field_violations": [{"field": f, "description": s} for f, s in d.field_violations],
        "quota_violations": [{"subject": s, "description": t} for s, t in d.quota_violations],
    }
    if d.retry_after_s is not None:
        out["retry_delay_s"] = d.retry_after_s
    return d.code.name, out


class Runner:
    def __init__(self, target: str, nonce: str) -> None:
        self.target = target
        self.nonce = nonce
        self._clients: dict[str, Client] = {}

    def client(self, auth: str) -> Client:
        if auth not in self._clients:
            key = None if auth == "none" else os.environ.get(f"CONFORMANCE_KEY_{auth.upper()}")
            if auth != "none" and not key:
                raise SystemExit(f"CONFORMANCE_KEY_{auth.upper()} is not set")
            self._clients[auth] = Client(self.target, api_key=key)
        return self._clients[auth]

    def call(self, step: Mapping[str, Any]) -> dict[str, Any]:
        rpc = str(step["rpc"])
        request = json_format.ParseDict(step["request"], _REQUESTS[rpc]())
        client = self.client(str(step.get("auth", "valid")))
        timeout = float(step.get("deadline_ms", DEFAULT_DEADLINE_MS)) / 1000
        out: dict[str, Any] = {"code": "OK"}
        events: list[dict[str, Any]] = []
        start = time.monotonic()
        try:
            if rpc == "Estimate":
                assert isinstance(request, svc.EstimateRequest)
                out["response"] = to_json(client.estimate(request=request, timeout=timeout))
            elif rpc == "Analyze":
                assert isinstance(request, svc.AnalyzeRequest)
                out["response"] = to_json(client.analyze(request=request, timeout=timeout))
            else:
                assert isinstance(request, svc.StreamRequest)
                for event in client.stream(request=request, timeout=timeout):
                    events.append(to_json(event))
        except grpc.RpcError as err:
            out["code"], out["error"] = error_json(err)
        if rpc == "Stream":
            out["events"] = events
        out["elapsed_ms"] = (time.monotonic() - start) * 1000
        return out

    def run_step(self, step: Mapping[str, Any]) -> dict[str, Any]:
        repeat = int(step.get("repeat_until_error", 0))
        attempts = 0
        while True:
            attempts += 1
            out = self.call(step)
            if out["code"] != "OK" or attempts >= max(repeat, 1):
                out["attempts"] = attempts
                return out

    def run_case(self, case: Mapping[str, Any]) -> list[str]:
        failures: list[str] = []
        outcomes: dict[str, Any] = {}
        for i, step in enumerate(case["steps"]):
            sid = str(step.get("id", f"step{i}"))
            out = self.run_step(step)
            outcomes[sid] = out
            expect = step.get("expect", {})
            want = str(expect.get("code", "OK"))
            if out["code"] != want:
                message = out.get("error", {}).get("message", "")
                failures.append(f"{sid}: code {out['code']} ({message}), want {want}")
                continue
            for spec in expect.get("checks", []):
                failure = check(out, spec, outcomes)
                if failure:
                    failures.append(f"{sid}: {failure}")
        return failures

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


def load_cases(directory: Path, nonce: str) -> list[dict[str, Any]]:
    cases = []
    for path in sorted(directory.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        name = json.loads(text)["name"]
        cases.append(json.loads(text.replace("{{nonce}}", f"{nonce}-{name}")))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", required=True)
    ap.add_argument("--cases", required=True, type=Path)
    ap.add_argument("--nonce", default=str(time.time_ns()))
    ap.add_argument("--case", action="append", default=[], help="run only these cases")
    args = ap.parse_args(argv)
    runner = Runner(args.target, args.nonce)
    all_ok = True
    try:
        for case in load_cases(args.cases, args.nonce):
            if args.case and case["name"] not in args.case:
                continue
            start = time.monotonic()
            failures = runner.run_case(case)
            ms = round((time.monotonic() - start) * 1000)
            all_ok &= not failures
            line = {"case": case["name"], "ok": not failures, "failures": failures, "ms": ms}
            print(json.dumps(line), flush=True)
    finally:
        runner.close()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
