"""Single-flight: N concurrent identical misses make exactly one upstream call.

Runs right behind the cache stage, which hands it keyed calls (``KeyedCall``). Identical means
the same cache key, and the same tenant when answers are shared across tenants (one tenant's
limits, budget or deadline never fail another tenant's request).

In process: the first caller of a key starts a *flight*: a task of its own that makes the
call, so a cancelled caller (the first one included) never cancels it while others still
wait: it finishes and stores the answer for them and for later. When the *last* caller leaves
(cancelled, or its deadline passed) and nobody joins within ``ABANDON_GRACE_S``, nobody wants
the answer any more and the flight is cancelled too, so a cancelled job leaves no upstream
call running. Every caller, first and later, follows the flight's events as they come: a
streaming caller gets the deltas live, then the Finish (``cached=True`` for all but the first
caller: they cost nothing); a failed call raises its error in every caller. The answer is
stored, and then handed to the callers, as soon as its Finish arrives: the stages behind the
flight settle their books on the way out of the call (a breaker's record, a bucket's refund)
after that, and what fails there is logged, not raised in callers that already have their
answer. A streamed call's task reads on past its first delta only once a caller has taken it
(``_Flight.passed_on``), so the first token is not held up by the rest of a burst that came
in with it. A caller waits no longer than its own deadline; the call itself runs
under the first caller's deadline. (The key ignores ``stream``, so a streaming caller that
joins a non-streaming call of the same key gets its answer as one delta; the runner never
sends the same prompt both ways.)

Across replicas (Redis configured): before calling upstream the flight joins the key's Redis
lease (``SET NX PX`` with an owner token, renewed while the call runs, compare-and-delete when
done; see ``state/redis_cache.py``). A flight that finds the lease held waits, polling with
back-off, bounded by its deadline and ``cache.flight_wait_s``, until the owner's answer lands
(it is then replayed, deltas included, to every local caller: remote followers get the stream
when the answer is complete, not live), the owner publishes its error (raised here too), or the
owner's lease expires because it crashed (this replica then takes the lease over and calls).
Lease operations go through the gateway's one Redis gate (``state/gate.py``): if Redis is
unreachable, or known to be down, the flight simply calls upstream: Redis errors never fail a
request.

Policy: ``bypass`` calls never coalesce (the caller asked for a fresh call) but store their
answer. A flight follows its first caller's policy: started by a ``no_store`` call, it stays
in this process (no lease) and its answer is not stored, even for the callers that joined it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from longread_server.backoff import Backoff
from longread_server.calls.cache import CachedAnswer, KeyedCall, ResponseCache, replay
from longread_server.calls.pipeline import Call, CallContext, Next
from longread_server.domain import (
    CallRejected,
    ErrorKind,
    Finish,
    LlmEvent,
    TextDelta,
    UpstreamError,
)
from longread_server.repeat_timeout import RepeatTimeout
from longread_server.state.gate import SHARED, RedisGate
from longread_server.state.redis_cache import Joined, RedisCache

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a failed owner's error stays readable by the replicas that waited for it.
ERROR_KEEP_S = 10.0
# An identical request arriving just after the last caller left still gets the call in flight;
# short enough that a cancelled job's upstream calls stop well within 100 ms.
ABANDON_GRACE_S = 0.05
# A waiter polls the lease holder's key from 20 ms, 1.5 times longer each time, up to 200 ms.
_POLL = Backoff(0.02, 0.2, factor=1.5)


class _Flight:
    """One in-flight call and everything it has produced so far.

    A text delta is kept as its bare string: strings are not tracked by the cyclic garbage
    collector and ``TextDelta`` objects are, and a full collection stops the event loop for
    every object it walks (with 500 Streams open the flights held some 18,000 deltas). Each
    follower gets a ``TextDelta`` of its own as it reads one."""

    __slots__ = ("_taken", "_waiting", "done", "error", "events", "followers", "task")

    def __init__(self) -> None:
        self.events: list[LlmEvent | str] = []
        self.error: BaseException | None = None
        self.done = False
        self._waiting: list[asyncio.Future[None]] = []  # the followers read up to the end
        self._taken: asyncio.Future[None] | None = None  # see passed_on
        self.followers = 0
        self.task: asyncio.Task[None] | None = None

    async def passed_on(self) -> None:
        """Returns once a follower has taken every event so far (at once if none follows).

        For a stream's first delta: the call's task reads on only after that, so a follower
        passes the first delta on before the rest of what came in with it (a fast upstream's
        burst) is read, instead of after it. Waiting for the follower to come back for more,
        rather than yielding to the loop, is what puts its turn first: the follower's own
        consumer may be another task still."""
        if self.followers == 0:
            return
        self._taken = asyncio.get_running_loop().create_future()
        try:
            await self._taken
        finally:
            self._taken = None

    def _took_all(self) -> None:
        taken = self._taken
        if taken is not None and not taken.done():
            taken.set_result(None)

    def leave(self) -> None:
        """A caller stopped following. When the last one has left, the unfinished call is
        cancelled unless another caller joins within the grace period."""
        self._took_all()  # one that left takes nothing more: the call need not wait for it
        self.followers -= 1
        if self.followers == 0 and not self.done and self.task is not None:
            asyncio.get_running_loop().call_later(ABANDON_GRACE_S, self._abandon)

    def _abandon(self) -> None:
        if self.followers == 0 and not self.done and self.task is not None:
            self.task.cancel()

    def _notify(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():  # (one whose follower was cancelled or timed out is)
                waiter.set_result(None)

    def push(self, delta: TextDelta) -> None:
        self.events.append(delta.text)
        self._notify()

    def land(self, events: list[LlmEvent]) -> None:
        self.events.extend(ev.text if type(ev) is TextDelta else ev for ev in events)
        self.done = True
        self._notify()

    def fail(self, error: BaseException) -> None:
        if self.done:  # landed: what fails after the answer (the books) is not the answer's
            return
        self.error = error
        self.done = True
        self._notify()

    async def follow(self, *, first: bool, ctx: CallContext) -> AsyncIterator[LlmEvent]:
        """Every event from the start, then the end (or the error); waits at most until the
        caller's deadline."""
        loop = asyncio.get_running_loop()
        bound = RepeatTimeout(loop)
        i = 0
        try:
            while True:
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if isinstance(ev, str):
                        yield TextDelta(ev)
                        continue
                    if not first and isinstance(ev, Finish) and not ev.cached:
                        ev = dataclasses.replace(ev, cached=True)
                    yield ev
                if self.done:
                    if self.error is not None:
                        raise self.error.with_traceback(None)
                    return
                self._took_all()
                waiter = loop.create_future()
                self._waiting.append(waiter)
                remaining = ctx.remaining()
                try:
                    with bound.bound(None if remaining is None else max(0.0, remaining)):
                        await waiter
                except TimeoutError:
                    raise UpstreamError(
                        ErrorKind.TIMEOUT,
                        "deadline passed while waiting for an identical call in flight",
                    ) from None
        finally:
            bound.close()


def encode_error(error: BaseException) -> bytes:
    """An error as JSON, for the replicas waiting on the failed call."""
    doc: dict[str, Any]
    if isinstance(error, CallRejected):
        doc = {
            "t": "rejected",
            "reason": error.reason,
            "message": error.message,
            "retry_after_s": error.retry_after_s,
            "quota_subject": error.quota_subject,
            "metadata": error.metadata,
            "permanent": bool(getattr(error, "permanent", False)),
        }
    elif isinstance(error, UpstreamError):
        doc = {
            "t": "upstream",
            "kind": error.kind.value,
            "message": error.message,
            "status": error.status,
            "vendor_type": error.vendor_type,
            "vendor_code": error.vendor_code,
            "retry_after_s": error.retry_after_s,
            "request_id": error.request_id,
            "detail": error.detail,  # shared state, as answers are: not telemetry
        }
    else:
        # Only the type: the text of an exception we did not make may quote the request.
        doc = {"t": "upstream", "kind": "other", "message": type(error).__name__}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_error(raw: bytes) -> Exception:
    try:
        doc = json.loads(raw)
        if doc.get("t") == "rejected":
            rejected = CallRejected(
                str(doc["reason"]),
                str(doc["message"]),
                retry_after_s=doc.get("retry_after_s"),
                quota_subject=str(doc.get("quota_subject") or ""),
                metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
            )
            rejected.permanent = bool(doc.get("permanent"))
            return rejected
        return UpstreamError(
            ErrorKind(doc.get("kind", "other")),
            str(doc.get("message", "")),
            status=doc.get("status"),
            vendor_type=str(doc.get("vendor_type") or ""),
            vendor_code=str(doc.get("vendor_code") or ""),
            retry_after_s=doc.get("retry_after_s"),
            request_id=str(doc.get("request_id") or ""),
            detail=str(doc.get("detail") or ""),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return UpstreamError(ErrorKind.OTHER, "the same call failed on another replica")


class SingleFlightStage:
    """Coalesces concurrent identical calls in this process and, with Redis, across replicas;
    the flight's leader stores the complete answer."""

    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache
        self._flights: dict[str, _Flight] = {}

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        key = call.cache_key if isinstance(call, KeyedCall) else ""
        if not key:
            return nxt(call)  # uncached: no generator of ours around the events
        return self._shared(call, nxt, key)

    async def _shared(self, call: Call, nxt: Next, key: str) -> AsyncIterator[LlmEvent]:
        if call.ctx.cache_mode == "bypass" or not self._cache.cfg.single_flight:
            async for ev in self._alone(call, nxt, key):
                yield ev
            return
        fid = key + self._cache.scope(call.ctx.tenant)
        flight = self._flights.get(fid)
        first = flight is None
        if flight is None:
            flight = _Flight()
            self._flights[fid] = flight
            flight.task = self._cache.spawn(
                self._lead(fid, flight, call, nxt, key), name=f"flight-{key[:12]}"
            )
        else:
            self._cache.stats.coalesced += 1
        flight.followers += 1
        try:
            async for ev in flight.follow(first=first, ctx=call.ctx):
                yield ev
        finally:
            flight.leave()

    async def _alone(self, call: Call, nxt: Next, key: str) -> AsyncIterator[LlmEvent]:
        """One call, not shared with anyone; its complete answer is stored."""
        deltas: list[str] = []
        self._cache.stats.upstream_calls += 1
        async for ev in nxt(call):
            if isinstance(ev, TextDelta):
                deltas.append(ev.text)
            elif isinstance(ev, Finish) and not ev.cached:
                await self._store(call, key, deltas, ev)
            yield ev

    async def _store(self, call: Call, key: str, deltas: list[str], finish: Finish) -> None:
        if finish.fallback is not None:
            # Another model answered: ``key`` is the primary request's, and the fallback
            # stage has stored the answer under the key of the request that gave it.
            return
        await self._cache.keep(call.ctx, key, deltas, finish)

    def _close(self, fid: str, flight: _Flight) -> None:
        if self._flights.get(fid) is flight:
            del self._flights[fid]

    async def _lead(self, fid: str, flight: _Flight, call: Call, nxt: Next, key: str) -> None:
        cache = self._cache
        remote = cache.remote if call.ctx.cache_mode != "no_store" else None
        gate = cache.gate
        scope = cache.scope(call.ctx.tenant)
        token = ""
        renewer: asyncio.Task[None] | None = None
        try:
            if remote is not None and gate is not None:
                outcome = await self._join_remote(remote, gate, call, key, scope)
                if isinstance(outcome, CachedAnswer):
                    self._close(fid, flight)
                    flight.land(replay(outcome, stream=call.req.stream))
                    return
                if isinstance(outcome, Exception):
                    raise outcome
                token = outcome
                if token:
                    renewer = asyncio.create_task(self._renew(remote, key, scope, token))
            deltas: list[str] = []
            finish: Finish | None = None
            cache.stats.upstream_calls += 1
            async for ev in nxt(call):
                if finish is not None:
                    continue  # (a Finish is the last event; nothing after it is the answer)
                if isinstance(ev, TextDelta):
                    deltas.append(ev.text)
                    flight.push(ev)
                    if len(deltas) == 1 and call.req.stream:
                        await flight.passed_on()
                elif isinstance(ev, Finish):
                    finish = ev
                    await self._store(call, key, deltas, finish)
                    if token and remote is not None:
                        if renewer is not None:
                            renewer.cancel()
                        await self._follow_up(functools.partial(remote.release, key, scope, token))
                        token = ""
                    # Stored: the callers take the answer now, before the stages behind
                    # settle their books (a breaker's record, a bucket's refund: Redis round
                    # trips when shared) on the way out of the call.
                    self._close(fid, flight)
                    flight.land([finish])
                    await asyncio.sleep(0)
            if finish is None:
                raise UpstreamError(ErrorKind.CONNECTION, "the model call ended without a result")
        except asyncio.CancelledError:
            self._close(fid, flight)
            flight.fail(UpstreamError(ErrorKind.CONNECTION, "the shared model call was cancelled"))
            if token and remote is not None:
                with contextlib.suppress(Exception):
                    await self._follow_up(functools.partial(remote.release, key, scope, token))
            raise
        except Exception as e:
            self._close(fid, flight)
            if flight.done:  # settling after the answer was stored and handed out
                log.warning("single-flight: after %s was answered: %r", key[:12], e)
                return
            flight.fail(e)
            if token and remote is not None:
                error = encode_error(e)
                await self._follow_up(
                    functools.partial(remote.fail, key, scope, token, error, ERROR_KEEP_S)
                )
        finally:
            if renewer is not None:
                renewer.cancel()

    async def _follow_up(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """A lease operation after the join, through the Redis gate: its result, or None when
        Redis failed or is known to be down (counted there, never raised)."""
        gate = self._cache.gate
        return None if gate is None else await gate.settle(SHARED, op)

    async def _join_remote(
        self, remote: RedisCache, gate: RedisGate, call: Call, key: str, scope: str
    ) -> CachedAnswer | Exception | str:
        """Our lease token; the answer or error of the replica that holds the lease; or ""
        (Redis unreachable, or waited too long): call upstream without a lease."""
        cache, stats = self._cache, self._cache.stats
        token = secrets.token_hex(16)
        watched = ""
        polls = 0  # since the lease changed hands
        started = time.monotonic()
        while True:
            join = functools.partial(remote.join, key, scope, token, cache.cfg.lock_ttl_s, watched)
            joined, _ = await gate.run(join, _no_lease, fail_open=True)
            if joined is None:
                return ""
            if joined.state == "acquired":
                if watched:
                    stats.takeovers += 1
                return token
            if joined.state == "value":
                answer = cache.decode(joined.data)
                if answer is None:
                    return ""
                stats.remote_hits += 1
                return answer
            if joined.state == "error":
                stats.remote_errors += 1
                return decode_error(joined.data)
            if not watched:
                stats.remote_waits += 1
            if joined.holder != watched:
                watched = joined.holder
                polls = 0
            remaining = call.ctx.remaining()
            if remaining is not None and remaining <= 0:
                return UpstreamError(
                    ErrorKind.TIMEOUT,
                    "deadline passed while waiting for the same call on another replica",
                )
            if time.monotonic() - started >= cache.cfg.flight_wait_s:
                stats.wait_abandoned += 1
                return ""
            polls += 1
            delay = _POLL.delay(polls)
            await asyncio.sleep(delay if remaining is None else min(delay, remaining))

    async def _renew(self, remote: RedisCache, key: str, scope: str, token: str) -> None:
        lease = self._cache.cfg.lock_ttl_s
        renew = functools.partial(remote.renew, key, scope, token, lease)
        while True:
            await asyncio.sleep(lease / 3)
            # None: Redis failed or is down; try again next period.
            if await self._follow_up(renew) is False:
                log.warning("single-flight: lost the lease of %s", key[:12])
                return


async def _no_lease() -> Joined | None:
    """What stands in for a lease while Redis is unavailable: none (call upstream alone)."""
    return None
