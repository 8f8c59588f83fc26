"""Proto <-> domain conversion, with validation. Protobuf types stop here."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import duration_pb2, json_format
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb

from longread_server.api.errors import Violations
from longread_server.config import LimitsConfig
from longread_server.domain import (
    InvalidRequest,
    Message,
    ModelInfo,
    ModelPreference,
    Usage,
    too_large,
)
from longread_server.plan.catalog import Price
from longread_server.plan.chunker import TextChunk
from longread_server.plan.planner import JobPlan, JobSpec, Strategy
from longread_server.run.analysis import Estimate
from longread_server.run.events import (
    AnswerDelta,
    CacheStatus,
    CallDone,
    CallOutput,
    CallStarted,
    JobResult,
    JobStage,
    JobWarning,
    PlanReady,
    RunEvent,
)
from longread_server.run.request import JobRequest
from longread_server.run.runner import Sampling

AnyRequest = svc.EstimateRequest | svc.AnalyzeRequest | svc.StreamRequest

_STRATEGY_IN = {
    pb.STRATEGY_UNSPECIFIED: Strategy.AUTO,
    pb.STRATEGY_SINGLE_PASS: Strategy.SINGLE_PASS,
    pb.STRATEGY_MAP_REDUCE: Strategy.MAP_REDUCE,
    pb.STRATEGY_REFINE: Strategy.REFINE,
    pb.STRATEGY_SELECT: Strategy.SELECT,
}
_STRATEGY_OUT: dict[Strategy, pb.Strategy.ValueType] = {
    v: k for k, v in _STRATEGY_IN.items() if v is not Strategy.AUTO
}
_CACHE_MODES = {
    pb.CACHE_MODE_UNSPECIFIED: "default",
    pb.CACHE_MODE_BYPASS: "bypass",
    pb.CACHE_MODE_NO_STORE: "no_store",
    pb.CACHE_MODE_ONLY_IF_CACHED: "only_if_cached",
}
_CACHE_STATUS = {
    CacheStatus.MISS: pb.CACHE_STATUS_MISS,
    CacheStatus.HIT: pb.CACHE_STATUS_HIT,
    CacheStatus.PARTIAL: pb.CACHE_STATUS_PARTIAL,
    CacheStatus.BYPASS: pb.CACHE_STATUS_BYPASS,
    CacheStatus.SEMANTIC_HIT: pb.CACHE_STATUS_SEMANTIC_HIT,
}
_STAGES = {
    JobStage.SINGLE: pb.STAGE_SINGLE,
    JobStage.MAP: pb.STAGE_MAP,
    JobStage.COLLAPSE: pb.STAGE_COLLAPSE,
    JobStage.REDUCE: pb.STAGE_REDUCE,
    JobStage.REFINE: pb.STAGE_REFINE,
}
_ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
_PREFERENCES = {
    pb.MODEL_PREFERENCE_UNSPECIFIED: ModelPreference.DEFAULT,
    pb.MODEL_PREFERENCE_CHEAPEST: ModelPreference.CHEAPEST,
    pb.MODEL_PREFERENCE_LARGEST_CONTEXT: ModelPreference.LARGEST_CONTEXT,
}
# Bounds on what a request may carry besides the document, so that no field can make the
# gateway (or an error that names it) carry megabytes. OpenAI's chat API takes at most 4 stop
# sequences (platform.openai.com/docs/api-reference/chat/create, `stop`); 1,000 characters a
# sequence is Amazon Bedrock's documented bound for Claude's stop sequences.
MAX_STOP = 4
MAX_STOP_CHARS = 1000
MAX_NAME_CHARS = 256  # model.vendor, model.model
MAX_ID_CHARS = 1024  # document.id
MAX_MEDIA_TYPE_CHARS = 255  # RFC 6838: 127 for the type and for the subtype
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 128
MAX_LABEL_VALUE_CHARS = 1024
# google.protobuf.Duration's own range (google/protobuf/duration.proto): about 10,000 years.
_DURATION_MAX_SECONDS = 315_576_000_000


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request whose bytes are not a message of its type, or over the size limit. The
    servicer sees it in place of the request and answers with ``error``."""

    error: InvalidRequest


RequestT = TypeVar("RequestT", bound=ProtoMessage)


def decoder(
    message_type: type[RequestT], max_bytes: int, *, json: bool = False
) -> Callable[[bytes], RequestT | Undecodable]:
    """The request deserializer of one method: never raises, so neither gRPC nor Connect
    answers bad bytes on its own (UNKNOWN, or INVALID_ARGUMENT without details); the RPC
    answers INVALID_ARGUMENT through ``rpcs.py``. ``json``: the body is the message in
    protobuf's JSON mapping (Connect's ``application/json``), not its binary form."""
    name = message_type.DESCRIPTOR.full_name
    form = "JSON for it" if json else "undecodable protobuf, or a string field that is not UTF-8"

    def parse(raw: bytes) -> RequestT:
        if not json:
            return message_type.FromString(raw)
        # Unknown fields are ignored, as in the binary form and as every Connect server
        # does: a newer client's request still reaches an older gateway.
        return json_format.Parse(raw, message_type(), ignore_unknown_fields=True)

    def decode(raw: bytes) -> RequestT | Undecodable:
        if len(raw) > max_bytes:
            return Undecodable(
                too_large("document.text", "the request", len(raw), max_bytes, "bytes")
            )
        try:
            return parse(raw)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError):
            # The parsers' messages may quote the input; never echo it.
            return Undecodable(
                InvalidRequest(
                    [],
                    "MALFORMED_REQUEST",
                    message=f"the request is not a valid {name} ({form})",
                )
            )

    return decode


def _check_chars(v: Violations, path: str, value: str, limit: int) -> bool:
    if len(value) > limit:
        v.add(path, f"is {len(value)} characters; the limit is {limit} characters")
        return False
    return True


def _ttl(v: Violations, d: duration_pb2.Duration) -> float | None:
    """A Duration as seconds, refused unless it is valid by its own spec and positive."""
    if not (
        -_DURATION_MAX_SECONDS <= d.seconds <= _DURATION_MAX_SECONDS
        and -999_999_999 <= d.nanos <= 999_999_999
        and not (d.seconds > 0 > d.nanos or d.seconds < 0 < d.nanos)
    ):
        v.add(
            "cache.ttl",
            "is not a valid Duration: seconds within +-315576000000, nanos within +-999999999, "
            "both of one sign",
        )
        return None
    ttl = d.seconds + d.nanos / 1e9
    if ttl <= 0:
        v.add("cache.ttl", "must be positive")
        return None
    return ttl


def parse_request(req: AnyRequest | Undecodable, limits: LimitsConfig) -> JobRequest:
    """Validates the fields that need no catalog lookup; reports every violation at once.
    A part of the request that is not set is its defaults, which need no checking."""
    if isinstance(req, Undecodable):
        raise req.error
    v = Violations()
    text = req.document.text
    if not text or text.isspace():  # (strip() would copy a whole document to find out)
        v.add("document.text", "must not be empty")
    elif len(text) > limits.max_document_chars:
        v.add_error(
            too_large(
                "document.text", "the document", len(text), limits.max_document_chars, "characters"
            )
        )
    _check_chars(v, "document.id", req.document.id, MAX_ID_CHARS)
    _check_chars(v, "document.media_type", req.document.media_type, MAX_MEDIA_TYPE_CHARS)
    instruction = req.instruction
    if _check_chars(v, "instruction", instruction, limits.max_instruction_chars):
        instruction = instruction.strip()
        if not instruction:
            v.add("instruction", "must not be empty")
    vendor, model = req.model.vendor, req.model.model
    _check_chars(v, "model.vendor", vendor, MAX_NAME_CHARS)
    _check_chars(v, "model.model", model, MAX_NAME_CHARS)

    g = req.generation
    if req.HasField("generation"):
        sampling, max_out = _generation(v, g, limits)
    else:
        sampling, max_out = _NO_SAMPLING, None

    c = req.chunking
    if req.HasField("chunking"):
        if c.max_chunk_tokens < 0:
            v.add("chunking.max_chunk_tokens", f"must not be negative, got {c.max_chunk_tokens}")
        if c.overlap_tokens < 0:
            v.add("chunking.overlap_tokens", f"must not be negative, got {c.overlap_tokens}")
        elif c.max_chunk_tokens > 0 and c.overlap_tokens >= c.max_chunk_tokens:
            v.add(
                "chunking.overlap_tokens",
                f"must be smaller than max_chunk_tokens ({c.overlap_tokens} >= "
                f"{c.max_chunk_tokens})",
            )
        if c.strategy not in _STRATEGY_IN:
            v.add("chunking.strategy", f"unknown strategy {c.strategy}")
    if req.model.preference not in _PREFERENCES:
        v.add("model.preference", f"unknown preference {req.model.preference}")

    budget = req.budget.max_cost_usd if req.HasField("budget") else 0.0
    if budget < 0 or math.isnan(budget):
        v.add("budget.max_cost_usd", f"must not be negative, got {budget}")

    history = _history(v, req.history, limits) if req.history else ()

    cache_mode = "default"
    ttl: float | None = None
    labels: dict[str, str] = {}
    semantic: bool | None = None
    min_similarity: float | None = None
    if not isinstance(req, svc.EstimateRequest):
        if req.HasField("cache"):
            if req.cache.mode not in _CACHE_MODES:
                v.add("cache.mode", f"unknown cache mode {req.cache.mode}")
            else:
                cache_mode = _CACHE_MODES[req.cache.mode]
            if req.cache.HasField("ttl"):
                ttl = _ttl(v, req.cache.ttl)
            if req.cache.HasField("semantic"):
                semantic, min_similarity = _semantic(v, req.cache.semantic)
        if req.labels:
            labels = _labels(v, req.labels)
    v.raise_if_any()

    spec = JobSpec(
        text=text,
        instruction=instruction,
        system=g.system_prompt,
        history=history,
        max_output_tokens=max_out,
        max_chunk_tokens=c.max_chunk_tokens,
        overlap_tokens=c.overlap_tokens,
        strategy=_STRATEGY_IN.get(c.strategy, Strategy.AUTO),
        max_cost_usd=budget,
    )
    return JobRequest(
        spec=spec,
        vendor=vendor.strip(),
        model=model.strip(),
        preference=_PREFERENCES[req.model.preference],
        sampling=sampling,
        cache_mode=cache_mode,
        cache_ttl_s=ttl,
        semantic=semantic,
        min_similarity=min_similarity,
        labels=labels,
        exact_token_count=isinstance(req, svc.EstimateRequest) and req.exact_token_count,
    )


_NO_SAMPLING = Sampling(temperature=None, top_p=None, stop=(), seed=None)


def _generation(
    v: Violations, g: pb.GenerationOptions, limits: LimitsConfig
) -> tuple[Sampling, int | None]:
    """The sampling settings and the output limit (None: the model's)."""
    _check_chars(v, "generation.system_prompt", g.system_prompt, limits.max_instruction_chars)
    temperature = g.temperature if g.HasField("temperature") else None
    if temperature is not None and not (0.0 <= temperature <= 2.0):
        v.add("generation.temperature", f"must be in [0, 2], got {temperature}")
    top_p = g.top_p if g.HasField("top_p") else None
    if top_p is not None and not (0.0 < top_p <= 1.0):
        v.add("generation.top_p", f"must be in (0, 1], got {top_p}")
    max_out = g.max_output_tokens if g.HasField("max_output_tokens") else None
    if max_out is not None and max_out <= 0:
        v.add("generation.max_output_tokens", f"must be positive, got {max_out}")
    if len(g.stop) > MAX_STOP:
        v.add("generation.stop", f"at most {MAX_STOP} stop sequences, got {len(g.stop)}")
    else:
        for i, s in enumerate(g.stop):
            if not s:
                v.add(f"generation.stop[{i}]", "must not be empty")
            else:
                _check_chars(v, f"generation.stop[{i}]", s, MAX_STOP_CHARS)
    seed = g.seed if g.HasField("seed") else None
    sampling = Sampling(temperature=temperature, top_p=top_p, stop=tuple(g.stop), seed=seed)
    return sampling, max_out


def _history(v: Violations, turns: Sequence[pb.Turn], limits: LimitsConfig) -> tuple[Message, ...]:
    history: list[Message] = []
    if len(turns) > limits.max_history_turns:
        v.add("history", f"at most {limits.max_history_turns} turns, got {len(turns)}")
    elif sum(len(t.text) for t in turns) > limits.max_history_chars:
        v.add("history", f"is longer than {limits.max_history_chars} characters in all")
    else:
        for i, turn in enumerate(turns):
            role = _ROLES.get(turn.role)
            if role is None:
                v.add(f"history[{i}].role", "must be ROLE_USER or ROLE_ASSISTANT")
            elif not turn.text.strip():
                v.add(f"history[{i}].text", "must not be empty")
            else:
                history.append(Message(role, turn.text))  # type: ignore[arg-type]
    return tuple(history)


def _labels(v: Violations, given: Mapping[str, str]) -> dict[str, str]:
    labels = dict(given)
    if len(labels) > MAX_LABELS:
        v.add("labels", f"at most {MAX_LABELS} labels, got {len(labels)}")
    else:
        for key, value in labels.items():
            if len(key) > MAX_LABEL_KEY_CHARS:
                v.add("labels", f"a key is longer than {MAX_LABEL_KEY_CHARS} characters")
            else:
                _check_chars(v, f"labels[{key}]", value, MAX_LABEL_VALUE_CHARS)
    return labels


_SEMANTIC_MODES = {pb.SEMANTIC_MODE_UNSPECIFIED: None, pb.SEMANTIC_MODE_ON: True,
                   pb.SEMANTIC_MODE_OFF: False}  # fmt: skip


def _semantic(v: Violations, p: pb.SemanticPolicy) -> tuple[bool | None, float | None]:
    """The request's semantic reuse (None: the tenant's setting) and its threshold (None:
    the configured one)."""
    on = _SEMANTIC_MODES.get(p.mode)
    if p.mode not in _SEMANTIC_MODES:
        v.add("cache.semantic.mode", f"unknown semantic mode {p.mode}")
    sim = p.min_similarity
    if sim == 0:
        return on, None
    if not math.isfinite(sim) or not 0 < sim <= 1:
        v.add("cache.semantic.min_similarity", f"must be in (0, 1] (0: the default), got {sim:g}")
        return on, None
    return on, float(sim)


# ---- domain -> proto ----
#
# Messages are filled in place (``_set_*``): a message given to a constructor or assigned to a
# field is copied into its parent, so building the parts first and then the whole copies every
# nested message once more. An Analyze response is built on every call.


def _set_model(out: pb.ResolvedModel, m: ModelInfo) -> None:
    out.vendor = m.vendor
    out.model = m.model
    out.context_window = m.context_window
    out.max_output_tokens = m.max_output_tokens


def _set_cost(out: pb.Cost, p: Price) -> None:
    out.input_usd = p.input_usd
    out.output_usd = p.output_usd
    out.cached_input_usd = p.cached_input_usd
    out.total_usd = p.total_usd


def _set_usage(out: pb.Usage, u: Usage) -> None:
    out.input_tokens = u.input_tokens
    out.output_tokens = u.output_tokens
    out.cached_input_tokens = u.cached_input_tokens
    out.cache_write_tokens = u.cache_write_tokens
    out.calls = u.calls


def _set_chunk(out: pb.Chunk, c: TextChunk) -> None:
    out.index = c.index
    out.start = c.start
    out.end = c.end
    out.tokens = c.tokens
    out.overlap_start = c.overlap_start
    out.content_hash = c.content_hash


def _set_plan(out: pb.Plan, p: JobPlan) -> None:
    out.strategy = _STRATEGY_OUT[p.strategy]
    _set_model(out.model, p.model)
    out.document_tokens = p.document_tokens
    out.tokens_exact = p.tokens_exact
    out.token_error = p.token_error
    out.effective_input_limit = p.effective_input_limit
    out.fits_single_pass = p.fits_single_pass
    for c in p.chunks:
        _set_chunk(out.chunks.add(), c)
    out.map_calls = p.map_calls
    out.collapse_calls = p.collapse_calls
    out.reduce_calls = p.reduce_calls
    out.estimated_input_tokens = p.estimated_input_tokens
    out.estimated_output_tokens = p.estimated_output_tokens
    _set_cost(out.estimated_cost, p.estimated_cost)
    out.within_budget = p.within_budget
    out.selected_chunks.extend(p.selected)
    out.history_turns_kept = p.history_kept


def _set_warning(out: pb.Warning, w: JobWarning) -> None:
    out.code = w.code
    out.message = w.message


def _set_duration(out: duration_pb2.Duration, seconds: float) -> None:
    """``seconds`` (a negative one: zero) as a Duration, as ``FromNanoseconds`` sets it."""
    out.seconds, out.nanos = divmod(max(0, round(seconds * 1e9)), 1_000_000_000)


def _set_chunk_result(out: pb.ChunkResult, o: CallOutput) -> None:
    out.index = o.index
    out.start = o.start
    out.end = o.end
    out.text = o.text
    _set_usage(out.usage, o.usage)
    out.cache_status = pb.CACHE_STATUS_HIT if o.cached else pb.CACHE_STATUS_MISS
    out.finish_reason = o.finish_reason


def _set_result(out: svc.AnalyzeResponse, r: JobResult, plan_pb: pb.Plan | None) -> None:
    out.text = r.text
    if plan_pb is not None:
        out.plan.CopyFrom(plan_pb)
    else:
        _set_plan(out.plan, r.plan)
    for o in r.chunk_outputs:
        _set_chunk_result(out.chunk_results.add(), o)
    _set_usage(out.usage, r.usage)
    _set_cost(out.cost, r.cost)
    out.cache_status = _CACHE_STATUS[r.cache_status]
    _set_model(out.model, r.model)
    t = out.timings
    _set_duration(t.total, r.timings.total_s)
    _set_duration(t.planning, r.timings.planning_s)
    _set_duration(t.first_token, r.timings.first_token_s)
    for w in r.warnings:
        _set_warning(out.warnings.add(), w)
    out.finish_reason = r.finish_reason
    if r.semantic is not None:
        out.semantic_match.SetInParent()  # present, whatever its fields hold
        out.semantic_match.question = r.semantic.question
        out.semantic_match.similarity = r.semantic.similarity


def plan(p: JobPlan) -> pb.Plan:
    out = pb.Plan()
    _set_plan(out, p)
    return out


def result(r: JobResult, plan_pb: pb.Plan | None = None) -> svc.AnalyzeResponse:
    """The response for ``r``; ``plan_pb``: its plan, already converted (a Stream's)."""
    out = svc.AnalyzeResponse()
    _set_result(out, r, plan_pb)
    return out


def stream_event(ev: RunEvent, plan_pb: pb.Plan | None = None) -> svc.StreamResponse:
    if isinstance(ev, AnswerDelta):
        # Set in place: a Delta made first would be copied into the message (every delta of
        # every Stream comes through here).
        out = svc.StreamResponse()
        delta = out.delta
        delta.stage = _STAGES[ev.stage]
        delta.index = ev.index
        delta.text = ev.text
        return out
    if isinstance(ev, CallStarted):
        return svc.StreamResponse(
            chunk_started=svc.ChunkStarted(stage=_STAGES[ev.stage], index=ev.index, of=ev.of)
        )
    msg = svc.StreamResponse()
    if isinstance(ev, CallDone):
        done = msg.chunk_done
        done.stage = _STAGES[ev.output.stage]
        _set_chunk_result(done.result, ev.output)
    elif isinstance(ev, PlanReady):
        if plan_pb is not None:
            msg.plan.CopyFrom(plan_pb)
        else:
            _set_plan(msg.plan, ev.plan)
    elif isinstance(ev, JobWarning):
        _set_warning(msg.warning, ev)
    else:
        _set_result(msg.result, ev, plan_pb)
    return msg


def estimate(e: Estimate) -> svc.EstimateResponse:
    out = svc.EstimateResponse()
    _set_plan(out.plan, e.plan)
    for f in e.fits:
        fit = out.candidates.add()
        _set_model(fit.model, f.model)
        fit.fits_single_pass = f.fits_single_pass
        fit.effective_input_limit = f.effective_input_limit
        fit.calls = f.calls
        _set_cost(fit.estimated_cost, f.estimated_cost)
        fit.reason = f.reason
    for w in e.warnings:
        _set_warning(out.warnings.add(), w)
    return out
