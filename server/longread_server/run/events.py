"""What a running job reports. Analyze collects these events; Stream forwards them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from longread_server.domain import FallbackNote, ModelInfo, Usage
from longread_server.plan.catalog import Price
from longread_server.plan.planner import JobPlan


class JobStage(enum.StrEnum):
    SINGLE = "single"
    MAP = "map"
    COLLAPSE = "collapse"
    REDUCE = "reduce"
    REFINE = "refine"


class CacheStatus(enum.StrEnum):
    MISS = "miss"
    HIT = "hit"
    PARTIAL = "partial"
    BYPASS = "bypass"
    SEMANTIC_HIT = "semantic_hit"  # the answer to an earlier question that means the same


@dataclass(frozen=True, slots=True)
class PlanReady:
    plan: JobPlan


@dataclass(frozen=True, slots=True)
class CallStarted:
    stage: JobStage
    index: int
    of: int


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    stage: JobStage
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class CallOutput:
    """The output of one call, traceable to the document span it read."""

    stage: JobStage
    index: int
    start: int
    end: int
    text: str
    usage: Usage
    cached: bool
    finish_reason: str
    # The model that answered (None: the plan's); with ``fallback``, why it was not the plan's.
    model: ModelInfo | None = None
    fallback: FallbackNote | None = None


@dataclass(frozen=True, slots=True)
class CallDone:
    output: CallOutput


@dataclass(frozen=True, slots=True)
class JobWarning:
    code: str
    message: str


def history_trimmed(plan: JobPlan, turns: int) -> JobWarning | None:
    """The warning for prior turns the plan left out (None: every turn fits)."""
    left_out = turns - plan.history_kept
    if left_out <= 0:
        return None
    return JobWarning(
        "HISTORY_TRIMMED",
        f"the {left_out} oldest conversation turn(s) did not fit and were left out",
    )


def tokens_estimated(plan: JobPlan) -> JobWarning | None:
    """The warning for a count that is an estimate (None: it is exact)."""
    if plan.tokens_exact:
        return None
    return JobWarning(
        "TOKENS_ESTIMATED",
        f"{plan.model.model} has no offline tokenizer here: counts use cl100k_base and may be "
        f"off by up to {plan.token_error:.0%}",
    )


def fallback_kind(n: FallbackNote) -> tuple[str, ...]:
    """What makes two reroutes the same for a warning: from where, to where, why."""
    return (n.from_upstream, n.from_model, n.model.vendor, n.model.model, n.reason.value)


def fallbacks_taken(notes: list[FallbackNote]) -> list[JobWarning]:
    """One FALLBACK warning per (model asked for, model that answered, reason), with how many
    calls it covers, in the order they first happened."""
    counts: dict[tuple[str, ...], tuple[FallbackNote, int]] = {}
    for n in notes:
        first, count = counts.get(fallback_kind(n), (n, 0))
        counts[fallback_kind(n)] = (first, count + 1)
    return [
        JobWarning(
            "FALLBACK",
            f"{count} call(s) answered by a fallback model: {n.describe()}",
        )
        for n, count in counts.values()
    ]


@dataclass(slots=True)
class Timings:
    total_s: float = 0.0
    planning_s: float = 0.0
    first_token_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """The earlier question whose answer a job reused, and how close the two were."""

    question: str
    similarity: float


@dataclass(slots=True)
class JobResult:
    text: str
    plan: JobPlan
    model: ModelInfo
    chunk_outputs: list[CallOutput]
    usage: Usage
    cost: Price
    cache_status: CacheStatus
    finish_reason: str
    timings: Timings
    warnings: list[JobWarning] = field(default_factory=list)
    semantic: SemanticMatch | None = None  # with CacheStatus.SEMANTIC_HIT


RunEvent = PlanReady | CallStarted | AnswerDelta | CallDone | JobWarning | JobResult
