"""Per-tenant monthly budgets: stop spending at the cap, warn at 80 %.

A ledger keeps what each tenant spent this calendar month (UTC). A job reserves its estimate
before its first call (``BudgetLedger.reserve``: check and add in one step, a Lua script on
Redis across replicas, one synchronous step in process otherwise), so concurrent jobs cannot
all pass a check that each of them alone would pass: spend stays within the cap plus what one
job spends over its estimate. The job's calls are charged against its reservation (the
pipeline stage), and when the job ends, however it ends, the reservation is settled to what
its calls cost: the unused part is given back, an overrun was charged as it happened. A call
is charged for what the upstream consumed: a finished call its reported usage; every attempt
the vendor received and did not refuse its prompt, and an answer cut short what it streamed.

With Redis configured the ledger is shared by all replicas (a per-month key). Its Redis work
goes through the gateway's one Redis gate (``state/gate.py``), with the cache, rate limits and
breakers: a short timeout, and Redis left alone for a while after it fails, so a dead Redis
costs one timeout per interval, not two per call. The ledger always fails open: while Redis is
unavailable each replica checks and counts what it spends itself (a budget is an accounting
limit; refusing every call would be worse). Without Redis, spend lives in process, and in a
state file when ``budget.state_dir`` is set, so a restart does not forget it; a reservation is
written there as it is taken, so a crash mid-job keeps the estimate charged, never less.

Across replicas a reservation is also a lease: it is listed, with the time its job must have
ended by (its deadline, plus ``budget.reservation_margin_s``), in a sorted set beside the
month's spend. A replica that dies mid-job never settles it; the next reservation of that
tenant on any replica finds the lease expired and gives its amount back, so a request the
client retried on a survivor is not charged twice. The spend and its leases share a Redis
Cluster slot (one hash tag), so each step is one script: reserving (with the give-back of
expired leases) and settling (ending the lease and booking the difference) each happen whole
or not at all, wherever a replica is killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from longread_server.calls.limits import prompt_tokens
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
from longread_server.state.gate import LOCAL, SHARED, RedisGate
from longread_server.state.redis import RedisClient

log = logging.getLogger(__name__)
WARN_SHARE = 0.8
_KEY_TTL_S = 40 * 24 * 3600  # a month's key outlives the month, then expires
STATE_FILE = "budget-spend.json"
_MONTHS_KEPT = 2  # the state file keeps this month and the last (a job may span the change)

# KEYS[1]: the month's spend, KEYS[2]: its leases (one slot). ARGV: amount, cap, ttl_s, now,
# lease, lease ends at. -> {1, spent after, given back} | {0, spent, given back}
# Check and add in one step: two replicas cannot both take the last of the budget. Leases that
# ended before now (their replica stopped) are given back first, in the same step, so one
# replica gives each back, once. A lease's member ends with "|<amount>".
_RESERVE = """
local back = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)) do
  redis.call('ZREM', KEYS[2], m)
  back = back + tonumber(string.match(m, '|([^|]*)$'))
end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if back > 0 then spent = tonumber(redis.call('INCRBYFLOAT', KEYS[1], -back)) end
if spent + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return {0, tostring(spent), tostring(back)}
end
local after = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return {1, tostring(after), tostring(back)}
"""

# KEYS as above. ARGV: lease, usd to add while the lease is held, the reservation, ttl_s.
# -> 1 when the lease was held; 0 when it had been given back (the reservation is then
# added again: the job did run). Ending the lease and booking the difference are one step.
_SETTLE = """
local held = redis.call('ZREM', KEYS[2], ARGV[1])
local add = tonumber(ARGV[2])
if held == 0 then add = add + tonumber(ARGV[3]) end
if add ~= 0 then
  redis.call('INCRBYFLOAT', KEYS[1], tostring(add))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return held
"""


def month_of(now: dt.datetime) -> str:
    return now.strftime("%Y-%m")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    """Monthly spend per tenant, in process (and its state file) or shared through Redis."""

    def __init__(
        self,
        caps: Mapping[str, float],
        redis: RedisClient | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        health: RedisGate | None = None,
        state_dir: str | Path | None = None,
        *,
        reservation_margin_s: float = 60.0,
        reservation_lease_s: float = 3600.0,
    ) -> None:
        self._caps = {t: c for t, c in caps.items() if c > 0}
        self._redis = redis
        self._clock = clock
        # Without Redis: all of the tenant's spend; with it: this replica's part, used while
        # Redis is unavailable.
        self._local: dict[tuple[str, str], float] = {}
        # The gateway passes the gate its other shared state uses; alone, one of its own.
        self.health = health or RedisGate()
        self._file = Path(state_dir) / STATE_FILE if state_dir else None
        self._save_failed = False
        if self._file is not None:
            self._load(self._file)
            with contextlib.suppress(OSError):  # reported by the first save that fails
                self._file.parent.mkdir(parents=True, exist_ok=True)
        self._reserve_script = redis.register_script(_RESERVE) if redis is not None else None
        self._settle_script = redis.register_script(_SETTLE) if redis is not None else None
        self.reservation_margin_s = reservation_margin_s
        self.reservation_lease_s = reservation_lease_s

    @property
    def volatile(self) -> bool:
        """True when a restart would forget what tenants with a cap have spent."""
        return bool(self._caps) and self._redis is None and self._file is None

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
        await self.book(self._key(tenant), usd, usd, SHARED)

    async def reserve(
        self, tenant: str, usd: float, within_s: float | None = None
    ) -> Reservation | None:
        """Takes ``usd`` of ``tenant``'s budget for a job that ends within ``within_s`` (its
        deadline; None: ``reservation_lease_s``), or refuses (BUDGET_EXCEEDED) when less is
        left; None for a tenant without a cap."""
        cap = self.cap(tenant)
        if not cap:
            return None
        usd = max(0.0, usd)
        key = self._key(tenant)
        lease = f"{uuid.uuid4().hex}|{usd!r}"
        lease_s = self.reservation_lease_s if within_s is None else max(0.0, within_s)

        def take_local() -> tuple[bool, float]:
            spent = self._local.get(key, 0.0)
            if spent + usd > cap:
                return False, spent
            self.book_local(key, usd)
            return True, spent

        redis, script = self._redis, self._reserve_script
        if redis is None or script is None:
            (taken, spent), where = take_local(), LOCAL
        else:

            async def shared() -> tuple[bool, float]:
                now = time.time()
                until = now + lease_s + self.reservation_margin_s
                args: list[str | float] = [repr(usd), repr(cap), _KEY_TTL_S, repr(now), lease]
                args.append(repr(until))
                reply = await script(keys=list(self._redis_keys(key)), args=args)
                back = float(_text(reply[2]))
                if back > 0:
                    log.warning(
                        "budget: gave back $%.6f of %s's reservations for jobs that did not "
                        "settle (their replica stopped)",
                        back,
                        key[0],
                    )
                if int(reply[0]) == 0:
                    return False, float(_text(reply[1]))
                # Also this replica's part, should Redis fail before the settlement.
                self.book_local(key, usd)
                return True, float(_text(reply[1])) - usd

            async def local() -> tuple[bool, float]:
                return take_local()

            (taken, spent), where = await self.health.run(shared, local, fail_open=True)
        if not taken:
            raise exceeded(tenant, BudgetState(cap, spent), usd)
        return Reservation(self, key, usd, where, BudgetState(cap, max(0.0, spent)), lease)

    async def settle(
        self, key: tuple[str, str], lease: str, local_usd: float, reserved_usd: float, where: str
    ) -> None:
        """Settles a reservation of ``reserved_usd``: ``local_usd`` more in process, and in Redis
        as much while its lease is held, or the reservation too once it was given back (the
        job outlived its lease) or was never there (taken while Redis was down)."""
        redis, script = self._redis, self._settle_script
        if redis is None or script is None or where != SHARED:
            await self.book(key, local_usd, local_usd + reserved_usd, SHARED)
            return
        self.book_local(key, local_usd)

        async def settle() -> None:
            args: list[str | float] = [lease, repr(local_usd), repr(reserved_usd), _KEY_TTL_S]
            await script(keys=list(self._redis_keys(key)), args=args)

        # Skipped while Redis is known to be down: the lease ends and gives the reservation
        # back; the local ledger has the job's cost.
        await self.health.settle(SHARED, settle)

    async def book(
        self, key: tuple[str, str], local_usd: float, shared_usd: float, where: str
    ) -> None:
        """Adds ``local_usd`` in process and ``shared_usd`` in Redis (when ``where`` is shared
        and Redis is up); negative amounts give back."""
        self.book_local(key, local_usd)
        redis = self._redis
        if redis is None or not shared_usd:
            return

        async def add() -> None:
            rkey = self._redis_key(key)
            async with redis.pipeline(transaction=True) as p:
                p.incrbyfloat(rkey, shared_usd)
                p.expire(rkey, _KEY_TTL_S)
                await p.execute()

        # Skipped while Redis is known to be down (counted as dropped): the local ledger has it.
        await self.health.settle(where, add)

    def book_local(self, key: tuple[str, str], usd: float) -> None:
        """Adds to the in-process ledger (and its state file)."""
        if not usd:
            return
        self._local[key] = max(0.0, self._local.get(key, 0.0) + usd)
        if self._file is not None:
            self._save(self._file)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            # Refusing to start would stop every tenant; starting from zero is what a gateway
            # without a state file does, and the log says so.
            log.warning("budget state %s is unreadable (%r); spend starts from zero", path, e)
            return
        for month, spend in data.get("spend", {}).items():
            for tenant, usd in spend.items():
                self._local[(str(tenant), str(month))] = float(usd)

    def _save(self, path: Path) -> None:
        months = sorted({m for _, m in self._local})[-_MONTHS_KEPT:]
        spend: dict[str, dict[str, float]] = {m: {} for m in months}
        for (tenant, month), usd in self._local.items():
            if month in spend:
                spend[month][tenant] = usd
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "spend": spend}, sort_keys=True))
            os.replace(tmp, path)  # a reader (or a crash) sees the old file or the new one
        except OSError as e:
            if not self._save_failed:
                log.warning("budget state %s cannot be written (%r)", path, e)
            self._save_failed = True
        else:
            self._save_failed = False

    @classmethod
    def _redis_key(cls, key: tuple[str, str]) -> str:
        return cls._redis_keys(key)[0]

    @staticmethod
    def _redis_keys(key: tuple[str, str]) -> tuple[str, str]:
        """The month's spend and its leases. Both keys are the same after their first ``{``,
        so Redis Cluster hashes the same tag of both (one slot), whatever the tenant's name."""
        tag = f"{{{key[1]}:{key[0]}}}"
        return f"longread:budget:{tag}", f"longread:budget-leases:{tag}"


class Reservation:
    """A job's share of its tenant's budget, taken before its first call and settled when it
    ends: its calls are charged here, and reach the ledger only beyond what was reserved."""

    def __init__(
        self,
        ledger: BudgetLedger,
        key: tuple[str, str],
        usd: float,
        where: str,
        before: BudgetState,
        lease: str = "",
    ) -> None:
        self._ledger = ledger
        self._lease = lease  # its entry among the tenant's leases (Redis)
        self._key = key
        self.reserved_usd = usd
        self.where = where  # where the reservation was taken: Redis (shared) or in process
        self.before = before  # the tenant's budget just before it
        self.used_usd = 0.0
        self._covered = usd  # in the ledger for this job: the reservation, then any overrun
        self.settled = False

    @property
    def covers(self) -> bool:
        return not self.settled and self.used_usd < self.reserved_usd

    async def charge(self, usd: float) -> None:
        if usd <= 0:
            return
        if self.settled:  # a call that outlived its job (a cancelled map call settling late)
            await self._ledger.book(self._key, usd, usd, SHARED)
            return
        self.used_usd += usd
        over = self.used_usd - self._covered
        if over > 0:
            self._covered = self.used_usd
            await self._ledger.book(self._key, over, over, SHARED)

    async def settle(self) -> None:
        """Gives back what the job did not use (once)."""
        if self.settled:
            return
        self.settled = True
        local = self.used_usd - self._covered
        await self._ledger.settle(self._key, self._lease, local, self.reserved_usd, self.where)


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
    """Refuses calls once a tenant's budget is spent (unless the job's reservation still
    covers them); charges each call what the upstream consumed: a finished call its reported
    usage, a call ended early its prompt and the answer so far, and every other attempt the
    vendor received (a retried timeout, a losing hedge) its prompt."""

    def __init__(self, ledger: BudgetLedger, catalog: Catalog) -> None:
        self._ledger = ledger
        self._catalog = catalog

    def __call__(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        # Counting tokens costs nothing: only answers are charged. Uncharged calls pass
        # straight through, with no generator of ours around their events.
        if not self._ledger.cap(call.ctx.tenant) or call.req.operation is not Operation.CHAT:
            return nxt(call)
        return self._charged(call, nxt)

    async def _charged(self, call: Call, nxt: Next) -> AsyncIterator[LlmEvent]:
        tenant = call.ctx.tenant
        spend = call.ctx.budget
        if spend is None or not spend.covers:
            state = await self._ledger.state(tenant)
            if state.remaining_usd <= 0:
                raise exceeded(tenant, state)

        async def charge(usd: float) -> None:
            if spend is not None:
                await spend.charge(usd)
            else:
                await self._ledger.charge(tenant, usd)

        model = self._catalog.get(call.vendor, call.req.model)
        finished = False
        streamed: list[str] | None = None  # the answer so far, once the upstream has answered
        try:
            async for ev in nxt(call):
                if isinstance(ev, Finish):
                    finished, streamed = True, None
                    # A fallback's usage is priced at the rates of the model that answered.
                    paid = ev.fallback.model if ev.fallback is not None else model
                    if not ev.cached and paid is not None:
                        await charge(price(paid, ev.usage).total_usd)
                elif isinstance(ev, TextDelta):
                    if streamed is None:
                        streamed = []
                    streamed.append(ev.text)
                yield ev
        finally:
            if model is not None:
                usd = self._unreported_usd(model, call, finished, streamed)
                if usd > 0:
                    with contextlib.suppress(Exception):  # never mask how the call ended
                        await charge(usd)

    @staticmethod
    def _unreported_usd(
        model: ModelInfo, call: Call, finished: bool, streamed: list[str] | None
    ) -> float:
        """What the vendor bills that no usage reported: the prompt of every attempt it
        received and did not refuse (cancelled or timed out while it worked, before or after
        answering), and the text of an answer cut short before its usage came."""
        prompts = call.meter.sent - call.meter.refused - (1 if finished else 0)
        if streamed is not None:
            prompts = max(prompts, 1)  # the answering attempt read its prompt, whatever came next
        output = get_tokenizer(model.tokenizer).count("".join(streamed)) if streamed else 0
        if prompts <= 0 and not output:
            return 0.0
        usage = Usage(
            input_tokens=max(0, prompts) * prompt_tokens(call.req), output_tokens=output, calls=1
        )
        return price(model, usage).total_usd
