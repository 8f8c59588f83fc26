"""The planner: how a job will run, what it will cost, and whether it fits. Pure, no I/O.

Every limit is an *effective* one: the model's context minus what each call must reserve
(system prompt, instruction, prompt template, conversation history, overlap, output tokens),
shrunk by the token-count error when counts are estimates. It is never the advertised size.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from longread_server.domain import Message, ModelInfo, Usage
from longread_server.memo import REMEMBER_MAX_CHARS, Memo
from longread_server.plan import prompts
from longread_server.plan.catalog import Price, price, token_error
from longread_server.plan.chunker import TextChunk, chunk_text
from longread_server.plan.framing import openai_call_tokens, openai_framed
from longread_server.plan.rank import bm25_scores, select
from longread_server.plan.tokenizers import Tokenizer, get_tokenizer

MAX_COLLAPSE_DEPTH = 4
TURN_OVERHEAD = 4  # tokens of framing per conversation turn
SELECT_SEPARATOR = 8  # tokens between two selected passages
NOTE_OVERHEAD = 16  # tokens of the markup around one note in a reduce prompt


class Strategy(enum.StrEnum):
    AUTO = "auto"
    SINGLE_PASS = "single_pass"
    MAP_REDUCE = "map_reduce"
    REFINE = "refine"
    SELECT = "select"


class PlanError(ValueError):
    """The job cannot run as asked; ``field`` names the request field to change."""

    def __init__(self, message: str, *, field: str = "", reason: str = "DOES_NOT_FIT") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to plan: the parts of a request that decide the work."""

    text: str
    instruction: str
    system: str = ""
    history: tuple[Message, ...] = ()
    max_output_tokens: int | None = None  # per call; None: the configured defaults
    max_chunk_tokens: int = 0  # 0: sized from the model
    overlap_tokens: int = 0
    strategy: Strategy = Strategy.AUTO
    max_cost_usd: float = 0.0  # 0: no cap


@dataclass(frozen=True, slots=True)
class PlanDefaults:
    """Configured defaults the planner fills in."""

    output_tokens: int = 2048
    map_output_tokens: int = 1024
    chunk_tokens: int = 16_000
    select_chunk_tokens: int = 1024  # select ranks small passages
    max_chunks: int = 4096


@dataclass(slots=True)
class JobPlan:
    """The work a job will do, with its estimated tokens and cost."""

    strategy: Strategy
    model: ModelInfo
    document_tokens: int
    tokens_exact: bool
    token_error: float
    effective_input_limit: int
    fits_single_pass: bool
    output_tokens: int  # limit of the final (single or reduce) call
    map_output_tokens: int
    overhead_tokens: int  # prompt tokens every call carries besides the document or notes
    chunks: list[TextChunk] = field(default_factory=list)
    map_calls: int = 0
    collapse_calls: int = 0
    reduce_calls: int = 0
    estimated_input_tokens: int = 0
    estimated_output_tokens: int = 0
    estimated_cost: Price = field(default_factory=Price)
    within_budget: bool = True
    selected: list[int] = field(default_factory=list)  # select: chunk indices, in order
    history_kept: int = 0  # most recent prior turns kept (older ones trimmed)

    @property
    def calls(self) -> int:
        return max(1, self.map_calls + self.collapse_calls + self.reduce_calls)

    @property
    def notes_per_call(self) -> int:
        """How many map (or collapse) outputs one reduce or collapse call can read."""
        limit = _shrink(self.model.context_window - self.output_tokens, self.token_error)
        return max(2, (limit - self.overhead_tokens) // (self.map_output_tokens + NOTE_OVERHEAD))


def _shrink(limit: int, error: float) -> int:
    """A limit in counted tokens that stays under ``limit`` real tokens despite ``error``."""
    return max(0, math.floor(limit / (1.0 + error)))


def plan_job(
    spec: JobSpec,
    model: ModelInfo,
    tokenizer: Tokenizer,
    defaults: PlanDefaults = PlanDefaults(),
    document_tokens: int | None = None,
    lens: Sequence[int] | None = None,
) -> JobPlan:
    """Plans ``spec`` on ``model``. Raises PlanError when it cannot run as asked.

    ``lens`` (the byte lengths of the document's tokens, ``chunker.token_lengths``, when the
    caller has them) spares a second encode; ``document_tokens`` overrides the count (e.g.
    with a vendor's exact count).
    """
    error = token_error(model)
    if document_tokens is not None:
        doc_tokens = document_tokens
    elif lens is not None:
        doc_tokens = len(lens)
    else:
        doc_tokens = tokenizer.count(spec.text)
    base = overhead_tokens(spec, tokenizer)
    output_tokens = min(spec.max_output_tokens or defaults.output_tokens, model.max_output_tokens)
    map_output = min(spec.max_output_tokens or defaults.map_output_tokens, model.max_output_tokens)
    call_limit = _shrink(model.context_window - output_tokens, error) - base
    map_limit = _shrink(model.context_window - map_output, error) - base - spec.overlap_tokens
    if call_limit <= 0:
        raise PlanError(
            f"{model.model} has a {model.context_window}-token context: too small for the "
            f"instruction and system prompt ({base} tokens) plus {output_tokens} output tokens",
            field="instruction",
        )
    if map_limit <= 0:
        # The prompt fits a call; with the overlap on top of it, a chunk does not.
        raise PlanError(
            f"overlap_tokens ({spec.overlap_tokens}) leaves no room for a chunk in a call to "
            f"{model.model} ({model.context_window}-token context)",
            field="chunking.overlap_tokens",
            reason="INVALID_FIELD",
        )
    fits = doc_tokens <= call_limit
    strategy = spec.strategy
    if strategy is Strategy.AUTO:
        strategy = Strategy.SINGLE_PASS if fits else Strategy.MAP_REDUCE
    # Prior turns ride along with the final call: the most recent ones that fit are kept.
    turn_tokens = [tokenizer.count(t.content) + TURN_OVERHEAD for t in spec.history]
    room = call_limit - doc_tokens if strategy is Strategy.SINGLE_PASS else call_limit // 2
    kept = _recent_that_fit(turn_tokens, room)
    history = sum(turn_tokens[len(turn_tokens) - kept :])
    # What the estimate charges per call besides the document, notes and history: for OpenAI's
    # models, the step's own prompt in OpenAI's published framing (what it bills); for the
    # others, whose framing is not published, the reserve.
    steps = _step_prompts(spec, tokenizer) if openai_framed(model) else _Steps(base, base, base)
    plan = JobPlan(
        strategy=strategy,
        model=model,
        document_tokens=doc_tokens,
        tokens_exact=error == 0.0,
        token_error=error,
        effective_input_limit=call_limit - history,
        fits_single_pass=fits,
        output_tokens=output_tokens,
        map_output_tokens=map_output,
        overhead_tokens=base + history,
        history_kept=kept,
    )
    if strategy is Strategy.SINGLE_PASS:
        if not fits:
            raise PlanError(
                f"the document has {doc_tokens} tokens; {model.model} takes at most "
                f"{call_limit} in one call after reserving prompt and output tokens. "
                "Use STRATEGY_MAP_REDUCE or a model with a larger context.",
                field="chunking.strategy",
            )
        plan.chunks = [_whole(spec.text, doc_tokens)]
        usage = Usage(input_tokens=doc_tokens + steps.single + history, output_tokens=output_tokens)
    elif strategy is Strategy.MAP_REDUCE:
        plan.effective_input_limit = map_limit
        _chunk(plan, spec, tokenizer, defaults, map_limit, defaults.chunk_tokens, lens)
        usage = _map_reduce_usage(plan, steps, history)
    elif strategy is Strategy.REFINE:
        # Each step reads the running answer (up to output_tokens) beside its chunk.
        refine_limit = call_limit - output_tokens - spec.overlap_tokens
        plan.effective_input_limit = refine_limit
        _chunk(plan, spec, tokenizer, defaults, refine_limit, defaults.chunk_tokens, lens)
        n = len(plan.chunks)
        plan.reduce_calls = n  # sequential steps, each one refining the answer
        usage = Usage(
            input_tokens=sum(c.tokens for c in plan.chunks)
            + n * base
            + (n - 1) * output_tokens
            + history,
            output_tokens=n * output_tokens,
        )
    else:
        # Select: small chunks ranked by BM25; the best that fit go into one call.
        select_limit = call_limit - history
        plan.effective_input_limit = select_limit
        _chunk(plan, spec, tokenizer, defaults, select_limit, defaults.select_chunk_tokens, lens)
        scores = bm25_scores(spec.instruction, [c.sent(spec.text) for c in plan.chunks])
        costs = [c.tokens + SELECT_SEPARATOR for c in plan.chunks]
        plan.selected = select(scores, costs, select_limit)
        plan.reduce_calls = 1
        usage = Usage(
            input_tokens=sum(costs[i] for i in plan.selected) + base + history,
            output_tokens=output_tokens,
        )
    usage.calls = plan.calls
    plan.estimated_input_tokens = usage.input_tokens
    plan.estimated_output_tokens = usage.output_tokens
    plan.estimated_cost = price(model, usage)
    plan.within_budget = (
        spec.max_cost_usd <= 0 or plan.estimated_cost.total_usd <= spec.max_cost_usd
    )
    return plan


def _recent_that_fit(turn_tokens: list[int], room: int) -> int:
    """How many of the most recent turns fit in ``room`` tokens (oldest trimmed first)."""
    used = kept = 0
    for t in reversed(turn_tokens):
        if used + t > room:
            break
        used += t
        kept += 1
    return kept


def _whole(text: str, tokens: int) -> TextChunk:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return TextChunk(
        index=0, start=0, end=len(text), overlap_start=0, tokens=tokens, content_hash=digest
    )


# A character is at most 4 UTF-8 bytes and a token at least 1.
MIN_CHUNK_TOKENS = 4


def _chunk(
    plan: JobPlan,
    spec: JobSpec,
    tokenizer: Tokenizer,
    defaults: PlanDefaults,
    limit: int,
    default_size: int,
    lens: Sequence[int] | None = None,
) -> None:
    """Splits the document into chunks of at most ``limit`` tokens (sent text, overlap in)."""
    chunk_tokens = spec.max_chunk_tokens or min(limit, default_size)
    if chunk_tokens > limit:
        raise PlanError(
            f"max_chunk_tokens {chunk_tokens} exceeds what {plan.model.model} takes in one call "
            f"({limit} tokens after reserving prompt, overlap and output)",
            field="chunking.max_chunk_tokens",
            reason="INVALID_FIELD",
        )
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise PlanError(
            f"max_chunk_tokens must be at least {MIN_CHUNK_TOKENS}, so that a chunk holds any "
            "one character (the chunker never splits one)",
            field="chunking.max_chunk_tokens",
            reason="INVALID_FIELD",
        )
    if spec.overlap_tokens >= chunk_tokens:
        raise PlanError(
            f"overlap_tokens must be smaller than the chunk size ({chunk_tokens} tokens)",
            field="chunking.overlap_tokens",
            reason="INVALID_FIELD",
        )
    estimated_chunks = math.ceil(plan.document_tokens / max(1, chunk_tokens - spec.overlap_tokens))
    if estimated_chunks > defaults.max_chunks:
        raise PlanError(
            f"the document would need about {estimated_chunks} chunks of {chunk_tokens} tokens; "
            f"the limit is {defaults.max_chunks}. Raise max_chunk_tokens.",
            field="chunking.max_chunk_tokens",
        )
    plan.chunks = chunk_text(spec.text, tokenizer, chunk_tokens, spec.overlap_tokens, lens)


def _map_reduce_usage(plan: JobPlan, steps: _Steps, history: int) -> Usage:
    """Tokens of the job's calls. Each note is counted at its output limit plus its markup:
    what the maps will write is not known before they run, so the estimate of the collapse and
    reduce prompts is an upper bound, and exact only when the notes reach their limit."""
    plan.map_calls = len(plan.chunks)
    usage = Usage(
        input_tokens=sum(c.tokens for c in plan.chunks) + steps.map * plan.map_calls,
        output_tokens=plan.map_output_tokens * plan.map_calls,
    )
    # Collapse map outputs in groups until they fit one reduce call.
    per_group = plan.notes_per_call
    note_tokens = plan.map_output_tokens + NOTE_OVERHEAD
    notes = plan.map_calls
    depth = 0
    while notes > per_group:
        depth += 1
        if depth > MAX_COLLAPSE_DEPTH:
            raise PlanError(
                "the map outputs cannot be combined within the collapse depth limit; "
                "raise max_chunk_tokens or lower max_output_tokens",
                field="chunking.max_chunk_tokens",
            )
        groups = math.ceil(notes / per_group)
        plan.collapse_calls += groups
        usage.input_tokens += notes * note_tokens + steps.reduce * groups
        usage.output_tokens += groups * plan.map_output_tokens
        notes = groups
    plan.reduce_calls = 1
    usage.input_tokens += notes * note_tokens + steps.reduce + history
    usage.output_tokens += plan.output_tokens
    return usage


@dataclass(frozen=True, slots=True)
class ModelFit:
    """How one model would handle a document, without chunking it (cheap, for Estimate)."""

    model: ModelInfo
    fits_single_pass: bool
    effective_input_limit: int
    calls: int
    estimated_cost: Price
    reason: str = ""


def overhead_tokens(spec: JobSpec, tokenizer: Tokenizer) -> int:
    """Prompt tokens every call of ``spec`` carries besides the document and history."""
    if len(spec.instruction) + len(spec.system) > REMEMBER_MAX_CHARS:
        return _overhead(spec.instruction, spec.system, tokenizer)
    key = (spec.instruction, spec.system, tokenizer.encoding_name)
    return _OVERHEADS.get_or_make(key, lambda: _overhead(spec.instruction, spec.system, tokenizer))


def _overhead(instruction: str, system: str, tokenizer: Tokenizer) -> int:
    text = prompts.overhead(instruction, prompts.system_prompt(system))
    return tokenizer.count(text) + 16


# The same instruction and system prompt come back request after request (and twice per
# request: planning and model fits).
_OVERHEADS: Memo[tuple[str, str, str], int] = Memo(256)


@dataclass(frozen=True, slots=True)
class _Steps:
    """Prompt tokens of one call of each step, besides the document (or chunk), the notes and
    the history."""

    single: int
    map: int
    reduce: int


def _step_prompts(spec: JobSpec, tokenizer: Tokenizer) -> _Steps:
    """``_Steps`` of an OpenAI model: each step's messages with an empty document, framed as
    OpenAI bills them (``framing``). Filling the template in adds the document's own tokens:
    its tags end in a line feed or start with one, where both encodings always split."""
    if len(spec.instruction) + len(spec.system) > REMEMBER_MAX_CHARS:
        return _count_steps(spec.instruction, spec.system, tokenizer)
    key = (spec.instruction, spec.system, tokenizer.encoding_name)
    return _STEPS.get_or_make(key, lambda: _count_steps(spec.instruction, spec.system, tokenizer))


def _count_steps(instruction: str, system: str, tokenizer: Tokenizer) -> _Steps:
    system = prompts.system_prompt(system)
    return _Steps(
        single=openai_call_tokens(system, prompts.single("", instruction), tokenizer),
        map=openai_call_tokens(system, prompts.map_step("", instruction), tokenizer),
        reduce=openai_call_tokens(system, prompts.reduce_step([], instruction), tokenizer),
    )


_STEPS: Memo[tuple[str, str, str], _Steps] = Memo(256)


def quick_fit(
    spec: JobSpec,
    model: ModelInfo,
    doc_tokens: int,
    overhead: int,
    defaults: PlanDefaults,
    error: float | None = None,
) -> ModelFit:
    """Fit and cost of ``model`` from token counts alone (map calls from the chunk size);
    ``error``: the counts' relative error bound for this model (default: that of counts made
    with its own encoding)."""
    if error is None:
        error = token_error(model)
    output_tokens = min(spec.max_output_tokens or defaults.output_tokens, model.max_output_tokens)
    map_output = min(spec.max_output_tokens or defaults.map_output_tokens, model.max_output_tokens)
    single_limit = _shrink(model.context_window - output_tokens, error) - overhead
    if single_limit <= 0:
        return ModelFit(model, False, 0, 0, Price(), "context too small for the prompt")
    # Costed like plan_job's estimate: OpenAI's models by their framed step prompts.
    steps = (
        _step_prompts(spec, get_tokenizer(model.tokenizer))
        if openai_framed(model)
        else _Steps(overhead, overhead, overhead)
    )
    if doc_tokens <= single_limit:
        usage = Usage(input_tokens=doc_tokens + steps.single, output_tokens=output_tokens)
        return ModelFit(model, True, single_limit, 1, price(model, usage))
    map_limit = _shrink(model.context_window - map_output, error) - overhead - spec.overlap_tokens
    chunk = min(spec.max_chunk_tokens or defaults.chunk_tokens, map_limit)
    if chunk <= spec.overlap_tokens:
        return ModelFit(model, False, single_limit, 0, Price(), "context too small to chunk")
    maps = math.ceil(doc_tokens / (chunk - spec.overlap_tokens))
    usage = Usage(
        input_tokens=doc_tokens
        + maps * (steps.map + spec.overlap_tokens)
        + maps * (map_output + NOTE_OVERHEAD)
        + steps.reduce,
        output_tokens=maps * map_output + output_tokens,
    )
    reason = (
        f"{doc_tokens} document tokens exceed the {single_limit}-token single-call limit; "
        f"needs map-reduce over about {maps} chunks"
    )
    return ModelFit(model, False, single_limit, maps + 1, price(model, usage), reason)
