"""The AnalysisService's RPCs, whatever carries them: authenticate, admit, convert, delegate,
record, and turn every failure into a ``ServiceError``.

Each face (``servicer.py`` for gRPC, ``connect.py`` for Connect and gRPC-Web over HTTP) only
reads its transport's metadata and deadline into a ``Call`` and writes a ``ServiceError`` the
way its protocol spells a status. Everything between the request and the response happens
here and below, in domain terms (``run/analysis.py``), so both faces answer the same request
with the same message or the same status, details included. Analyze collects the events
Stream forwards, so a Stream's final result equals what Analyze returns for the same request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass

from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb

from longread_server.api import convert
from longread_server.api.admission import Admission
from longread_server.api.auth import Authenticator
from longread_server.api.convert import Undecodable
from longread_server.api.errors import ServiceError, code_name, to_service_error
from longread_server.api.rpc_record import RpcRecord
from longread_server.config import AdmissionConfig, Config
from longread_server.plan.planner import JobPlan
from longread_server.run.analysis import Analysis, PreparedJob
from longread_server.run.events import AnswerDelta, JobResult, RunEvent
from longread_server.telemetry import Telemetry, disabled

Metadata = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class Call:
    """What an RPC's transport tells about it: the caller's metadata (lower-case keys: the API
    key, the trace context), the time left before its deadline, in seconds (None: no
    deadline), which protocol carried it (``rpc.system``), and whether this face's server span
    is ours to make (not when the gRPC instrumentation makes it)."""

    metadata: Metadata
    time_remaining: Callable[[], float | None]
    system: str = "grpc"
    own_span: bool = True


@dataclass(slots=True)
class _End:
    """The end of a Stream's events: how they ended (None: normally)."""

    error: Exception | None


class AnalysisRpcs:
    def __init__(
        self,
        cfg: Config,
        analysis: Analysis,
        auth: Authenticator,
        telemetry: Telemetry | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._cfg = cfg
        self._analysis = analysis
        self._auth = auth
        self._tel = telemetry or disabled()
        self._admission = admission or Admission(AdmissionConfig(enabled=False))

    # ---- the RPCs: each ends normally or raises ServiceError (CancelledError: the caller
    # went away). A request may be an ``Undecodable`` in place of the message (bytes that are
    # not one, or over the size limit): converting it answers INVALID_ARGUMENT.

    async def estimate(
        self, request: svc.EstimateRequest | Undecodable, call: Call
    ) -> svc.EstimateResponse:
        rec = self._record("Estimate", call)
        try:
            started, tenant, deadline = self._admit(call, rec)
            job = convert.parse_request(request, self._cfg.limits)
            est = await self._analysis.estimate(job, tenant, started=started, deadline=deadline)
            self._note_plan(rec, est.plan)
            out = convert.estimate(est)
        except BaseException as e:
            raise self._failed(rec, e) from None
        finally:
            self._admission.release()
        rec.finish("OK")
        return out

    async def analyze(
        self, request: svc.AnalyzeRequest | Undecodable, call: Call
    ) -> svc.AnalyzeResponse:
        rec = self._record("Analyze", call)
        try:
            prep = await self._prepare(request, call, rec)
            result: JobResult | None = None
            async with contextlib.aclosing(self._analysis.run(prep, streaming=False)) as events:
                async for ev in events:
                    if isinstance(ev, JobResult):
                        result = rec.result = ev
            assert result is not None
            out = convert.result(result)
        except BaseException as e:
            raise self._failed(rec, e) from None
        finally:
            self._admission.release()
        rec.finish("OK")
        return out

    async def stream(
        self, request: svc.StreamRequest | Undecodable, call: Call
    ) -> AsyncGenerator[svc.StreamResponse, None]:
        rec = self._record("Stream", call)
        try:
            prep = await self._prepare(request, call, rec)
            plan_pb: pb.Plan | None = None  # converted once, for the plan and the result
            ticket = self._admission.current()
            # Closed here and now when the transport closes this Stream, not when the event
            # loop finalizes the abandoned generator: the job's upstream calls stop at once.
            async with contextlib.aclosing(
                _ahead(
                    self._run(prep, rec, streaming=True),
                    self._cfg.server.stream_coalesce_after_ms / 1000,
                )
            ) as evs:
                async for ev in evs:
                    if plan_pb is None:  # once the job has started, not before
                        plan_pb = convert.plan(prep.plan)
                    with self._admission.sending(ticket):
                        yield convert.stream_event(ev, plan_pb)
            rec.finish("OK")
        except (Exception, asyncio.CancelledError) as e:
            raise self._failed(rec, e) from None
        finally:
            self._admission.release()
            rec.finish("CANCELLED")  # closed early by the transport; no-op once finished

    # ---- conversion and delegation ----

    async def _prepare(
        self,
        request: svc.AnalyzeRequest | svc.StreamRequest | Undecodable,
        call: Call,
        rec: RpcRecord,
    ) -> PreparedJob:
        started, tenant, deadline = self._admit(call, rec)
        job = convert.parse_request(request, self._cfg.limits)
        rec.note_labels(job.labels)
        prep = await self._analysis.prepare(job, tenant, started=started, deadline=deadline)
        self._note_plan(rec, prep.plan)
        return prep

    async def _run(
        self, prep: PreparedJob, rec: RpcRecord, *, streaming: bool
    ) -> AsyncGenerator[RunEvent, None]:
        async with contextlib.aclosing(self._analysis.run(prep, streaming=streaming)) as evs:
            async for ev in evs:
                if isinstance(ev, JobResult):
                    rec.result = ev
                yield ev

    def _admit(self, call: Call, rec: RpcRecord) -> tuple[float, str, float | None]:
        """When the RPC started, its tenant and its deadline (time.monotonic() seconds)."""
        started = time.monotonic()
        rec.tenant = self._auth.tenant(rec.metadata)
        self._admission.admit(rec.tenant)  # released when the RPC ends
        remaining = call.time_remaining()
        return started, rec.tenant, None if remaining is None else started + remaining

    @staticmethod
    def _note_plan(rec: RpcRecord, plan: JobPlan) -> None:
        rec.vendor, rec.model = plan.model.vendor, plan.model.model
        rec.document_tokens = plan.document_tokens

    # ---- the RPC's record and status ----

    def _record(self, method: str, call: Call) -> RpcRecord:
        # Read once (grpc.aio converts the metadata anew on each call): the API key and the
        # caller's traceparent both come from it.
        rec = RpcRecord(
            method,
            self._tel,
            self._cfg.telemetry.access_log,
            tuple(call.metadata),
            system=call.system,
        )
        if self._tel.tracing and call.own_span:
            rec.open_span()
        return rec

    def _failed(self, rec: RpcRecord, e: BaseException) -> BaseException:
        """The status for ``e``, recorded; a cancellation that is the caller's (not the
        drain's cut) is recorded and returned as it is, to be re-raised."""
        if isinstance(e, asyncio.CancelledError):
            if not self._admission.was_cut():
                rec.finish("CANCELLED")
                return e
            e = self._admission.cut_error()
        if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: not ours to map
            return e
        err = to_service_error(e, content=self._cfg.telemetry.record_content)
        rec.finish(code_name(err.code), err.reason)
        return err


class _Waiting:
    """The events a Stream's job has produced and its sender not yet taken, in order, with
    when each came: a deque and the one sender that waits on it (``asyncio.Queue`` keeps a
    list of getters and putters, and a future per ``get``, for what one consumer never
    needs)."""

    __slots__ = ("_waiter", "items")

    def __init__(self) -> None:
        self.items: collections.deque[tuple[RunEvent | _End, float]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: tuple[RunEvent | _End, float]) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> tuple[RunEvent | _End, float]:
        items = self.items
        while not items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()


async def _ahead(
    events: AsyncGenerator[RunEvent, None], coalesce_after_s: float = 0.0
) -> AsyncGenerator[RunEvent, None]:
    """``events``, produced by a task of their own: a transport sends each Stream message
    before it asks for the next, and the plan and progress messages would otherwise hold back
    the upstream call. Ends, or fails, as ``events`` does; closing it cancels the task, which
    closes ``events`` there. An answer delta that waited ``coalesce_after_s`` or more takes
    the deltas of its call waiting behind it along (``_coalesce``; 0: never)."""
    queue = _Waiting()
    clock = time.monotonic

    async def produce() -> None:
        try:
            async with contextlib.aclosing(events) as evs:
                async for ev in evs:
                    queue.put_nowait((ev, clock()))
            queue.put_nowait((_End(None), 0.0))
        except Exception as e:
            queue.put_nowait((_End(e), 0.0))
        except BaseException:  # cancelled: by the consumer below, which is gone by then
            queue.put_nowait((_End(RuntimeError("the stream's job was stopped")), 0.0))
            raise

    task = asyncio.create_task(produce(), name="stream-job")
    try:
        item, at = await queue.get()
        # One more turn of the loop before the first message: the job's first upstream call,
        # started while the plan was being put here (a task of its own), goes out before the
        # plan is converted and written, not after.
        await asyncio.sleep(0)
        held: tuple[RunEvent | _End, float] | None = None
        while True:
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            if (
                coalesce_after_s > 0
                and isinstance(item, AnswerDelta)
                and queue.items
                and clock() - at >= coalesce_after_s
            ):
                item, held = _coalesce(item, queue)
            yield item
            if held is not None:
                (item, at), held = held, None
            else:
                item, at = await queue.get()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# The most text one coalesced delta carries: a bounded message, however far a Stream fell behind.
COALESCE_MAX_CHARS = 16_384


def _coalesce(
    first: AnswerDelta, queue: _Waiting
) -> tuple[AnswerDelta, tuple[RunEvent | _End, float] | None]:
    """``first`` and the deltas of the same call already waiting behind it, as one delta; and
    the first waiting item that is not one of them (None: the queue is empty).

    Only a Stream that has fallen behind has deltas waiting: its transport, or the event loop,
    is slower than the upstream. Sending them as one message is the same text in the same
    order, in fewer writes, and writes are what a Stream's loop spends most on per delta. A
    Stream that keeps up sends each delta as it comes: nothing waits to be coalesced."""
    parts = [first.text]
    size = len(first.text)
    after: tuple[RunEvent | _End, float] | None = None
    items = queue.items
    while size < COALESCE_MAX_CHARS and items:
        waiting = items.popleft()
        nxt = waiting[0]
        if isinstance(nxt, AnswerDelta) and nxt.stage is first.stage and nxt.index == first.index:
            parts.append(nxt.text)
            size += len(nxt.text)
        else:
            after = waiting
            break
    if len(parts) == 1:
        return first, after
    return AnswerDelta(first.stage, first.index, "".join(parts)), after


__all__ = ["AnalysisRpcs", "Call", "ServiceError"]
