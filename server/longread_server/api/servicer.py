"""The AnalysisService servicer: authenticate, convert, delegate, map errors to statuses.

Everything between the request and the response happens below, in domain terms
(``run/analysis.py``). Analyze collects the events Stream forwards, so a Stream's final result
equals what Analyze returns for the same request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import analysis_service_pb2_grpc as svc_grpc

from longread_server.api import convert
from longread_server.api.admission import Admission
from longread_server.api.auth import Authenticator
from longread_server.api.convert import Undecodable
from longread_server.api.errors import code_name, to_service_error
from longread_server.api.rpc_record import RpcRecord
from longread_server.config import AdmissionConfig, Config
from longread_server.plan.planner import JobPlan
from longread_server.run.analysis import Analysis, PreparedJob
from longread_server.run.events import JobResult, RunEvent
from longread_server.telemetry import Telemetry, disabled

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(slots=True)
class _End:
    """The end of a Stream's events: how they ended (None: normally)."""

    error: Exception | None


class AnalysisServicer(svc_grpc.AnalysisServiceServicer):
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

    # ---- RPCs ----

    # Each method takes its request or, for bytes that are not one, an ``Undecodable`` (see
    # ``registry.analysis_handlers``), which converting turns into INVALID_ARGUMENT.

    async def Estimate(
        self, request: svc.EstimateRequest | Undecodable, context: Context
    ) -> svc.EstimateResponse:
        rec = self._record("Estimate", context)
        return await self._guarded(context, rec, self._estimate(request, context, rec))

    async def Analyze(
        self, request: svc.AnalyzeRequest | Undecodable, context: Context
    ) -> svc.AnalyzeResponse:
        rec = self._record("Analyze", context)
        return await self._guarded(context, rec, self._analyze(request, context, rec))

    async def Stream(
        self, request: svc.StreamRequest | Undecodable, context: Context
    ) -> AsyncIterator[svc.StreamResponse]:
        rec = self._record("Stream", context)
        try:
            prep = await self._prepare(request, context, rec)
            plan_pb = convert.plan(prep.plan)
            ticket = self._admission.current()
            # Closed here and now when grpc closes this Stream, not when the event loop
            # finalizes the abandoned generator: the job's upstream calls stop at once.
            async with contextlib.aclosing(
                self._ahead(self._run(prep, rec, streaming=True))
            ) as evs:
                async for ev in evs:
                    with self._admission.sending(ticket):
                        yield convert.stream_event(ev, plan_pb)
            rec.finish("OK")
        except asyncio.CancelledError:
            if not self._admission.was_cut():
                rec.finish("CANCELLED")
                raise
            await self._abort(context, rec, self._admission.cut_error())
        except Exception as e:
            await self._abort(context, rec, e)
        finally:
            self._admission.release()
            rec.finish("CANCELLED")  # closed early by grpc; no-op once finished

    # ---- conversion and delegation ----

    async def _estimate(
        self, request: svc.EstimateRequest | Undecodable, context: Context, rec: RpcRecord
    ) -> svc.EstimateResponse:
        started, tenant, deadline = self._admit(context, rec)
        job = convert.parse_request(request, self._cfg.limits)
        est = await self._analysis.estimate(job, tenant, started=started, deadline=deadline)
        self._note_plan(rec, est.plan)
        return convert.estimate(est)

    async def _analyze(
        self, request: svc.AnalyzeRequest | Undecodable, context: Context, rec: RpcRecord
    ) -> svc.AnalyzeResponse:
        prep = await self._prepare(request, context, rec)
        result: JobResult | None = None
        async with contextlib.aclosing(self._run(prep, rec, streaming=False)) as events:
            async for ev in events:
                if isinstance(ev, JobResult):
                    result = ev
        assert result is not None
        return convert.result(result)

    async def _prepare(
        self,
        request: svc.AnalyzeRequest | svc.StreamRequest | Undecodable,
        context: Context,
        rec: RpcRecord,
    ) -> PreparedJob:
        started, tenant, deadline = self._admit(context, rec)
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

    def _admit(self, context: Context, rec: RpcRecord) -> tuple[float, str, float | None]:
        """When the RPC started, its tenant and its deadline (time.monotonic() seconds)."""
        started = time.monotonic()
        rec.tenant = self._auth.tenant(rec.metadata)
        self._admission.admit(rec.tenant)  # released when the RPC ends (_guarded, Stream)
        remaining = context.time_remaining()
        return started, rec.tenant, None if remaining is None else started + remaining

    @staticmethod
    def _note_plan(rec: RpcRecord, plan: JobPlan) -> None:
        rec.vendor, rec.model = plan.model.vendor, plan.model.model
        rec.document_tokens = plan.document_tokens

    # ---- the RPC's record and status ----

    def _record(self, method: str, context: Context) -> RpcRecord:
        # Read once (grpc.aio converts the metadata anew on each call): the API key and the
        # caller's traceparent both come from it.
        rec = RpcRecord(
            method, self._tel, self._cfg.telemetry.access_log, context.invocation_metadata()
        )
        if self._tel.tracing and not self._cfg.telemetry.grpc_instrumentation:
            rec.open_span()
        return rec

    async def _guarded(self, context: Context, rec: RpcRecord, work: Awaitable[T]) -> T:
        try:
            out = await work
        except asyncio.CancelledError:
            if not self._admission.was_cut():
                rec.finish("CANCELLED")
                raise
            await self._abort(context, rec, self._admission.cut_error())
            raise AssertionError("unreachable") from None
        except Exception as e:
            await self._abort(context, rec, e)
            raise AssertionError("unreachable") from None
        finally:
            self._admission.release()
        rec.finish("OK")
        return out

    async def _abort(self, context: Context, rec: RpcRecord, e: Exception) -> None:
        """Ends the RPC with the status for ``e``. Re-raises grpc's own abort exception."""
        if isinstance(e, grpc.aio.AbortError):
            raise e
        err = to_service_error(e, content=self._cfg.telemetry.record_content)
        rec.finish(code_name(err.code), err.reason)
        await context.abort_with_status(err.to_status())

    @staticmethod
    async def _ahead(events: AsyncGenerator[RunEvent, None]) -> AsyncGenerator[RunEvent, None]:
        """``events``, produced by a task of their own: grpc sends each Stream message before
        it asks for the next, and the plan and progress messages would otherwise hold back
        the upstream call. Ends, or fails, as ``events`` does; closing it cancels the task,
        which closes ``events`` there."""
        queue: asyncio.Queue[RunEvent | _End] = asyncio.Queue()

        async def produce() -> None:
            try:
                async with contextlib.aclosing(events) as evs:
                    async for ev in evs:
                        queue.put_nowait(ev)
                queue.put_nowait(_End(None))
            except Exception as e:
                queue.put_nowait(_End(e))
            except BaseException:  # cancelled: by the consumer below, which is gone by then
                queue.put_nowait(_End(RuntimeError("the stream's job was stopped")))
                raise

        task = asyncio.create_task(produce(), name="stream-job")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
