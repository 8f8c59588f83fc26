"""Per-tenant monthly budgets: stop spending at the cap, warn at 80 %.

A ledger keeps what each tenant spent this calendar month (UTC). Jobs are checked up front
against their estimate (the servicer), and every model call is checked again and charged with
its real cost as it finishes (the pipeline stage), so concurrent jobs cannot overrun the cap
by more than the calls already in flight. With Redis configured the ledger is shared by all
replicas (INCRBYFLOAT on a per-month key). Its Redis work goes through the gateway's one Redis
gate (``state/gate.py``), with the cache, rate limits and breakers: a short timeout, and Redis
left alone for a while after it fails, so a dead Redis costs one timeout per interval, not two
per call. The ledger always fails open: while Redis is unavailable each replica checks and counts
what it spends itself (a budget is an accounting limit; refusing every call would be worse).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from longread_server.calls.pipeline import Call, Next
from longread_server.domain import (
    CallRejected,
    Finish,
    LlmEvent,
    ModelInfo,
    Operation,
    TextDelta,
    Usage,
)
from longread_server.plan.catalog import Catalog, price
from longread_server.plan.tokenizers import get_tokenizer
from longread_server.state.gate import SHARED, RedisGate

WARN_SHARE = 0.8
_KEY_TTL_S = 40 * 24 * 3600  # a month's key outlives the month, then expires


def month_of(now: dt.datetime) -> str:
    return now.strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class BudgetState:
    """What a tenant may still spend this month."""

    cap_usd: float  # 0: no cap
    spent_usd: float

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.cap_usd - self.spent_usd) if self.cap_usd else float("inf")

    def warns_after(self, extra_usd: float) -> bool:
        """True when spending ``extra_usd`` more crosses the warning share of the cap."""
        return bool(self.cap_usd) and self.spent_usd + extra_usd >= WARN_SHARE * self.cap_usd


class BudgetLedger:
    """Monthly spend per tenant, in process or shared through Redis."""

    def __init__(
        self,
        caps: Mapping[str, float],
        redis: Redis | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        health: RedisGate | None = None,
    ) -> None:
        self._caps = {t: c for t, c in caps.items() if c > 0}
        self._redis = redis
        self._clock = clock
        self._local: dict[tuple[str, str], float] = {}
        # The gateway passes the gate its other shared state uses; alone, one of its own.
        self.health = health or RedisGate()

    def cap(self, tenant: str) -> float:
        return self._caps.get(tenant, 0.0)

    def _key(self, tenant: str) -> tuple[str, str]:
        return tenant, month_of(self._clock())

    async def state(self, tenant: str) -> BudgetState:
        cap = self.cap(tenant)
        if not cap:
            return BudgetState(0.0, 0.0)
        key = self._key(tenant)
        redis = self._redis
        if redis is None:
            return BudgetState(cap, self._local.get(key, 0.0))

        async def shared() -> float:
            raw = await redis.get(self._redis_key(key))
            return float(raw) if raw is not None else 0.0

        async def local() -> float:
            return self._local.get(key, 0.0)

        # Budgets fail open even where limits and breakers are set to fail closed.
        spent, _ = await self.health.run(shared, local, fail_open=True)
        return BudgetState(cap, spent)

    async def charge(self, tenant: str, usd: float) -> None:
        if usd <= 0 or not self.cap(tenant):
            return
        key = self._key(tenant)
        self._local[key] = self._local.get(key, 0.0) + usd
        redis = self._redis
        if redis is None:
            return

        async def add() -> None:
            rkey = self._redis_key(key)
            async with redis.pipeline(transaction=True) as p:
                p.incrbyfloat(rkey, usd)
                p.expire(rkey, _KEY_TTL_S)
                await p.execute()

        # Skipped while Redis is known to be down (counted as dropped): the local ledger has it.
        await self.health.settle(SHARED, add)

    @staticmethod
    def _redis_key(key: tuple[str, str]) -> str:
        return f"longread:budget:{key[1]}:{key[0]}"


def exceeded(tenant: str, state: BudgetState, extra_usd: float = 0.0) -> CallRejected:
    return CallRejected(
        "BUDGET_EXCEEDED",
        f"tenant {tenant!r} has spent ${state.spent_usd:.4f} of its ${state.cap_usd:.2f} "
        f"monthly budget; this needs ${extra_usd:.4f} more",
        quota_subject=f"tenant:{tenant}/monthly_budget_usd",
        metadata={
            "spent_usd": f"{state.spent_usd:.6f}",
            "cap_usd": f"{state.cap_usd:.2f}",
            "needed_usd": f"{extra_usd:.6f}",
        },
    )


class BudgetStage:
    """Refuses calls once a tenant's budget is spent; charges each call's cost: a finished
    call's reported usage, and a call ended early what the upstream had read and written."""

    def __init__(self, ledger: BudgetLedger, catalog: Catalog) -> None:
        self._ledger = ledger
        self._catalog = catalog

    async def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        tenant = call.ctx.tenant
        # Counting tokens costs nothing: only answers are charged.
        if not self._ledger.cap(tenant) or call.req.operation is not Operation.CHAT:
            async for ev in nxt(call):
                yield ev
            return
        state = await self._ledger.state(tenant)
        if state.remaining_usd <= 0:
            raise exceeded(tenant, state)
        model = self._catalog.get(call.vendor, call.req.model)
        streamed: list[str] | None = None  # the answer so far, once the upstream has answered
        try:
            async for ev in nxt(call):
                if isinstance(ev, Finish):
                    streamed = None
                    # A fallback's usage is priced at the rates of the model that answered.
                    paid = ev.fallback.model if ev.fallback is not None else model
                    if not ev.cached and paid is not None:
                        await self._ledger.charge(tenant, price(paid, ev.usage).total_usd)
                elif isinstance(ev, TextDelta):
                    if streamed is None:
                        streamed = []
                    streamed.append(ev.text)
                yield ev
        finally:
            if streamed is not None and model is not None:
                # Ended after the upstream had read the prompt and begun to answer, but before
                # it reported usage (the caller cancelled, the drain cut it, the stream broke):
                # the vendor bills what it read and wrote, so the tenant is charged for it.
                await self._charge_unfinished(tenant, model, call, "".join(streamed))

    async def _charge_unfinished(
        self, tenant: str, model: ModelInfo, call: Call, text: str
    ) -> None:
        usage = Usage(
            input_tokens=call.req.estimated_prompt_tokens,
            output_tokens=get_tokenizer(model.tokenizer).count(text),
            calls=1,
        )
        with contextlib.suppress(Exception):  # never mask how the call ended
            await self._ledger.charge(tenant, price(model, usage).total_usd)
