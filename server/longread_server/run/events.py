"""What a running job reports. Analyze collects these events; Stream forwards them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from longread_server.domain import ModelInfo, Usage
from longread_server.plan.catalog import Price
from longread_server.plan.planner import JobPlan


class Stage(enum.StrEnum):
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


@dataclass(frozen=True, slots=True)
class PlanReady:
    plan: JobPlan


@dataclass(frozen=True, slots=True)
class CallStarted:
    stage: Stage
    index: int
    of: int


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    stage: Stage
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class CallOutput:
    """The output of one call, traceable to the document span it read."""

    stage: Stage
    index: int
    start: int
    end: int
    text: str
    usage: Usage
    cached: bool
    finish_reason: str


@dataclass(frozen=True, slots=True)
class CallDone:
    output: CallOutput


@dataclass(frozen=True, slots=True)
class JobWarning:
    code: str
    message: str


@dataclass(slots=True)
class Timings:
    total_s: float = 0.0
    planning_s: float = 0.0
    first_token_s: float = 0.0


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


RunEvent = PlanReady | CallStarted | AnswerDelta | CallDone | JobWarning | JobResult
