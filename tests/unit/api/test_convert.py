"""Proto <-> domain conversion: validation of every field (all violations at once, each with
its path), the enum mappings, and the domain results as protobuf messages."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from longread.v1 import analysis_service_pb2 as svc
from longread.v1 import types_pb2 as pb
from longread_server.api import convert
from longread_server.api.errors import ServiceError
from longread_server.config import LimitsConfig
from longread_server.domain import Message, ModelPreference, Usage
from longread_server.plan.catalog import Price
from longread_server.plan.planner import JobSpec, ModelFit, PlanDefaults, Strategy, plan_job
from longread_server.plan.tokenizers import get_tokenizer
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
    SemanticMatch,
    Timings,
)

from tests.unit.run.support import model, numbered_words

LIMITS = LimitsConfig()
DOC = "The harbour was dredged in 1998."
Q = "When was the harbour dredged?"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def analyze(**fields: Any) -> svc.AnalyzeRequest:
    fields.setdefault("document", pb.Document(text=DOC))
    fields.setdefault("instruction", Q)
    return svc.AnalyzeRequest(**fields)


def violations(req: convert.AnyRequest, limits: LimitsConfig = LIMITS) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        convert.parse_request(req, limits)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value


def fields_of(e: ServiceError) -> list[str]:
    return [v.field for v in e.violations]


# ---- validation ----

# One broken field each, and the path the violation must name.
BROKEN: list[tuple[str, dict[str, Any]]] = [
    ("document.text", {"document": pb.Document(text="")}),
    ("document.text", {"document": pb.Document(text=" \n\t ")}),
    ("instruction", {"instruction": "   "}),
    ("generation.temperature", {"generation": pb.GenerationOptions(temperature=2.01)}),
    ("generation.temperature", {"generation": pb.GenerationOptions(temperature=-0.5)}),
    ("generation.temperature", {"generation": pb.GenerationOptions(temperature=math.nan)}),
    ("generation.top_p", {"generation": pb.GenerationOptions(top_p=0.0)}),
    ("generation.top_p", {"generation": pb.GenerationOptions(top_p=1.5)}),
    ("generation.max_output_tokens", {"generation": pb.GenerationOptions(max_output_tokens=0)}),
    ("generation.stop", {"generation": pb.GenerationOptions(stop=["a", "b", "c", "d", "e"])}),
    ("generation.stop[1]", {"generation": pb.GenerationOptions(stop=["a", ""])}),
    ("chunking.max_chunk_tokens", {"chunking": pb.ChunkingOptions(max_chunk_tokens=-1)}),
    ("chunking.overlap_tokens", {"chunking": pb.ChunkingOptions(overlap_tokens=-1)}),
    (
        "chunking.overlap_tokens",
        {"chunking": pb.ChunkingOptions(max_chunk_tokens=100, overlap_tokens=100)},
    ),
    ("chunking.strategy", {"chunking": pb.ChunkingOptions(strategy=99)}),  # type: ignore[arg-type]
    ("model.preference", {"model": pb.ModelSelection(preference=7)}),  # type: ignore[arg-type]
    ("budget.max_cost_usd", {"budget": pb.Budget(max_cost_usd=-0.01)}),
    ("budget.max_cost_usd", {"budget": pb.Budget(max_cost_usd=math.nan)}),
    ("history[0].role", {"history": [pb.Turn(text="hi")]}),
    (
        "history[1].text",
        {"history": [pb.Turn(role=pb.ROLE_USER, text="a"), pb.Turn(role=pb.ROLE_ASSISTANT)]},
    ),
    ("cache.mode", {"cache": pb.CachePolicy(mode=12)}),  # type: ignore[arg-type]
    ("cache.ttl", {"cache": pb.CachePolicy(ttl=duration_pb2.Duration(seconds=0))}),
    ("cache.ttl", {"cache": pb.CachePolicy(ttl=duration_pb2.Duration(seconds=-5))}),
]


@pytest.mark.parametrize(("field", "change"), BROKEN, ids=[f for f, _ in BROKEN])
def test_each_rule_reports_its_field(field: str, change: dict[str, Any]) -> None:
    e = violations(analyze(**change))
    assert fields_of(e) == [field]
    assert e.reason == "INVALID_FIELD"
    assert e.metadata == {"fields": field}
    assert field in e.message


def test_every_violation_is_reported_at_once() -> None:
    req = analyze(
        document=pb.Document(text=""),
        instruction="",
        generation=pb.GenerationOptions(temperature=3, top_p=0, stop=[""]),
        budget=pb.Budget(max_cost_usd=-1),
        history=[pb.Turn(role=pb.ROLE_ASSISTANT, text=" ")],
    )
    e = violations(req)
    assert fields_of(e) == [
        "document.text",
        "instruction",
        "generation.temperature",
        "generation.top_p",
        "generation.stop[0]",
        "budget.max_cost_usd",
        "history[0].text",
    ]
    assert e.metadata["fields"] == ",".join(fields_of(e))


def test_limits_come_from_the_configuration() -> None:
    limits = LimitsConfig(max_document_chars=len(DOC) - 1, max_instruction_chars=5)
    e = violations(analyze(), limits)
    assert fields_of(e) == ["document.text", "instruction"]
    # A document over the size limit is its own reason, on the violation and the error.
    assert e.reason == "DOCUMENT_TOO_LARGE"
    assert e.violations[0].reason == "DOCUMENT_TOO_LARGE"
    assert f"limit is {len(DOC) - 1}" in e.violations[0].description
    ok = LimitsConfig(max_document_chars=len(DOC), max_instruction_chars=len(Q))
    assert convert.parse_request(analyze(), ok).spec.text == DOC


def test_an_estimate_has_no_cache_policy_or_labels_and_may_ask_for_an_exact_count() -> None:
    req = svc.EstimateRequest(document=pb.Document(text=DOC), instruction=Q, exact_token_count=True)
    job = convert.parse_request(req, LIMITS)
    assert (job.cache_mode, job.cache_ttl_s, job.labels) == ("default", None, {})
    assert job.exact_token_count
    # Only an estimate can ask for it: the other requests have no such field.
    assert not convert.parse_request(analyze(), LIMITS).exact_token_count


# ---- enum and field mapping ----


@pytest.mark.parametrize(
    ("value", "strategy"),
    [
        (pb.STRATEGY_UNSPECIFIED, Strategy.AUTO),
        (pb.STRATEGY_SINGLE_PASS, Strategy.SINGLE_PASS),
        (pb.STRATEGY_MAP_REDUCE, Strategy.MAP_REDUCE),
        (pb.STRATEGY_REFINE, Strategy.REFINE),
        (pb.STRATEGY_SELECT, Strategy.SELECT),
    ],
)
def test_strategies(value: pb.Strategy.ValueType, strategy: Strategy) -> None:
    job = convert.parse_request(analyze(chunking=pb.ChunkingOptions(strategy=value)), LIMITS)
    assert job.spec.strategy is strategy


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (pb.CACHE_MODE_UNSPECIFIED, "default"),
        (pb.CACHE_MODE_BYPASS, "bypass"),
        (pb.CACHE_MODE_NO_STORE, "no_store"),
        (pb.CACHE_MODE_ONLY_IF_CACHED, "only_if_cached"),
    ],
)
def test_cache_modes(value: pb.CacheMode.ValueType, mode: str) -> None:
    req = svc.StreamRequest(
        document=pb.Document(text=DOC),
        instruction=Q,
        cache=pb.CachePolicy(mode=value, ttl=duration_pb2.Duration(seconds=90, nanos=500_000_000)),
    )
    job = convert.parse_request(req, LIMITS)
    assert job.cache_mode == mode and job.cache_ttl_s == 90.5


@pytest.mark.parametrize(
    ("value", "preference"),
    [
        (pb.MODEL_PREFERENCE_UNSPECIFIED, ModelPreference.DEFAULT),
        (pb.MODEL_PREFERENCE_CHEAPEST, ModelPreference.CHEAPEST),
        (pb.MODEL_PREFERENCE_LARGEST_CONTEXT, ModelPreference.LARGEST_CONTEXT),
    ],
)
def test_model_preferences(
    value: pb.ModelPreference.ValueType, preference: ModelPreference
) -> None:
    job = convert.parse_request(analyze(model=pb.ModelSelection(preference=value)), LIMITS)
    assert job.preference is preference


def test_fields_carry_over_trimmed_where_whitespace_means_nothing() -> None:
    req = analyze(
        instruction=f"  {Q}\n",
        model=pb.ModelSelection(vendor=" openai ", model=" gpt-4.1 "),
        generation=pb.GenerationOptions(
            temperature=0.0,
            top_p=1.0,
            max_output_tokens=77,
            stop=["END"],
            seed=-3,
            system_prompt="Be brief.",
        ),
        chunking=pb.ChunkingOptions(max_chunk_tokens=500, overlap_tokens=20),
        budget=pb.Budget(max_cost_usd=0.25),
        history=[
            pb.Turn(role=pb.ROLE_USER, text="Hello"),
            pb.Turn(role=pb.ROLE_ASSISTANT, text="Hi"),
        ],
        labels={"team": "docs"},
    )
    job = convert.parse_request(req, LIMITS)
    s = job.spec
    assert (job.vendor, job.model, s.instruction) == ("openai", "gpt-4.1", Q)
    assert s.text == DOC and s.system == "Be brief." and s.max_output_tokens == 77
    assert (s.max_chunk_tokens, s.overlap_tokens, s.max_cost_usd) == (500, 20, 0.25)
    assert s.history == (Message("user", "Hello"), Message("assistant", "Hi"))
    smp = job.sampling
    # Zero is a value here, not "unset": temperature 0.0 must not become None.
    assert (smp.temperature, smp.top_p, smp.stop, smp.seed) == (0.0, 1.0, ("END",), -3)
    assert job.labels == {"team": "docs"}


def test_unset_generation_options_stay_unset() -> None:
    job = convert.parse_request(analyze(), LIMITS)
    smp = job.sampling
    assert (smp.temperature, smp.top_p, smp.stop, smp.seed) == (None, None, (), None)
    assert job.spec.max_output_tokens is None and job.cache_ttl_s is None


def test_a_part_set_to_its_defaults_converts_as_a_part_not_set() -> None:
    """Parts of the request that are not set are taken as their defaults without checking
    them; set explicitly to those defaults, they convert to the same job."""
    bare = analyze()
    spelled = analyze()
    spelled.generation.SetInParent()
    spelled.chunking.SetInParent()
    spelled.budget.SetInParent()
    spelled.cache.SetInParent()
    spelled.cache.semantic.SetInParent()
    assert not bare.HasField("generation") and spelled.HasField("generation")
    assert convert.parse_request(spelled, LIMITS) == convert.parse_request(bare, LIMITS)


# ---- properties ----

texts = st.text(min_size=1, max_size=60).filter(lambda t: not t.isspace())
words = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20)
turns = st.builds(pb.Turn, role=st.sampled_from([pb.ROLE_USER, pb.ROLE_ASSISTANT]), text=words)


@st.composite
def valid_requests(draw: st.DrawFn) -> svc.AnalyzeRequest:
    gen = pb.GenerationOptions(
        stop=draw(st.lists(words, max_size=4)), system_prompt=draw(st.text(max_size=20))
    )
    if draw(st.booleans()):
        gen.temperature = draw(st.floats(0.0, 2.0))
    if draw(st.booleans()):
        gen.top_p = draw(st.floats(0.0, 1.0, exclude_min=True))
    if draw(st.booleans()):
        gen.max_output_tokens = draw(st.integers(1, 2**31 - 1))
    if draw(st.booleans()):
        gen.seed = draw(st.integers(-(2**63), 2**63 - 1))
    size = draw(st.integers(0, 10_000))
    overlap = draw(st.integers(0, max(0, size - 1))) if size else draw(st.integers(0, 10_000))
    cache = pb.CachePolicy(mode=draw(st.sampled_from(list(pb.CacheMode.values()))))
    if draw(st.booleans()):
        cache.ttl.FromNanoseconds(draw(st.integers(1, 10**15)))
    return analyze(
        document=pb.Document(text=draw(texts)),
        instruction=draw(words),
        model=pb.ModelSelection(
            vendor=draw(st.text(max_size=8)),
            model=draw(st.text(max_size=8)),
            preference=draw(st.sampled_from(list(pb.ModelPreference.values()))),
        ),
        generation=gen,
        chunking=pb.ChunkingOptions(
            max_chunk_tokens=size,
            overlap_tokens=overlap,
            strategy=draw(st.sampled_from(list(pb.Strategy.values()))),
        ),
        cache=cache,
        budget=pb.Budget(max_cost_usd=draw(st.floats(0.0, 1e6))),
        history=draw(st.lists(turns, max_size=3)),
        labels=draw(st.dictionaries(words, st.text(max_size=10), max_size=3)),
    )


@FAST
@given(valid_requests())
def test_any_valid_request_converts_and_keeps_its_content(req: svc.AnalyzeRequest) -> None:
    job = convert.parse_request(req, LIMITS)
    assert job.spec.text == req.document.text
    assert job.spec.instruction == req.instruction.strip()
    assert len(job.spec.history) == len(req.history)
    assert job.sampling.stop == tuple(req.generation.stop)
    assert job.labels == dict(req.labels)
    assert job.spec.max_chunk_tokens == req.chunking.max_chunk_tokens


# Ways to break one field of a valid request, with the path that must be reported.
CORRUPTIONS = st.sampled_from(
    [
        ("generation.temperature", lambda r, x: setattr(r.generation, "temperature", 2 + x)),
        ("generation.temperature", lambda r, x: setattr(r.generation, "temperature", -x)),
        ("generation.top_p", lambda r, x: setattr(r.generation, "top_p", 1 + x)),
        ("generation.top_p", lambda r, x: setattr(r.generation, "top_p", -x)),
        ("budget.max_cost_usd", lambda r, x: setattr(r.budget, "max_cost_usd", -x)),
        ("instruction", lambda r, x: setattr(r, "instruction", " " * int(x % 5))),
        ("document.text", lambda r, x: setattr(r.document, "text", "\n" * int(x % 5))),
    ]
)


@FAST
@given(valid_requests(), CORRUPTIONS, st.floats(1e-9, 1e12))
def test_one_broken_field_is_always_reported_on_its_path(
    req: svc.AnalyzeRequest, corruption: tuple[str, Any], amount: float
) -> None:
    field, corrupt = corruption
    corrupt(req, amount)
    e = violations(req)
    assert fields_of(e) == [field]


any_float = st.floats(allow_nan=True, allow_infinity=True)
int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def arbitrary_requests(draw: st.DrawFn) -> svc.AnalyzeRequest | svc.EstimateRequest:
    gen = pb.GenerationOptions(stop=draw(st.lists(st.text(max_size=3), max_size=6)))
    for name, values in (
        ("temperature", any_float),
        ("top_p", any_float),
        ("max_output_tokens", int32),
    ):
        if draw(st.booleans()):
            setattr(gen, name, draw(values))
    common: dict[str, Any] = dict(
        document=pb.Document(text=draw(st.text(max_size=30))),
        instruction=draw(st.text(max_size=30)),
        model=pb.ModelSelection(preference=draw(st.integers(-3, 6))),  # type: ignore[arg-type]
        generation=gen,
        chunking=pb.ChunkingOptions(
            max_chunk_tokens=draw(int32),
            overlap_tokens=draw(int32),
            strategy=draw(st.integers(-3, 8)),  # type: ignore[arg-type]
        ),
        budget=pb.Budget(max_cost_usd=draw(any_float)),
        history=draw(
            st.lists(
                st.builds(pb.Turn, role=st.integers(-2, 4), text=st.text(max_size=5)),
                max_size=3,
            )
        ),
    )
    if draw(st.booleans()):
        return svc.EstimateRequest(**common, exact_token_count=draw(st.booleans()))
    ttl = duration_pb2.Duration(seconds=draw(st.integers(-100, 100)))
    cache = pb.CachePolicy(mode=draw(st.integers(-2, 6)), ttl=ttl)  # type: ignore[arg-type]
    return svc.AnalyzeRequest(**common, cache=cache)


@FAST
@given(arbitrary_requests())
def test_any_request_converts_or_is_invalid_argument_never_another_error(
    req: svc.AnalyzeRequest | svc.EstimateRequest,
) -> None:
    try:
        convert.parse_request(req, LIMITS)
    except ServiceError as e:
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT
        assert e.violations and all(v.field for v in e.violations)
        e.to_status()  # and it can be sent


# ---- domain -> proto ----

TOK = get_tokenizer("cl100k_base")
MODEL = model("tiny", "openai", context=100_000, exact=False)


PLAN = plan_job(
    JobSpec(
        text=numbered_words(200),
        instruction=Q,
        max_chunk_tokens=100,
        strategy=Strategy.MAP_REDUCE,
    ),
    MODEL,
    TOK,
    PlanDefaults(),
)


def output(index: int, cached: bool = False, stage: JobStage = JobStage.MAP) -> CallOutput:
    return CallOutput(
        stage, index, 10 * index, 10 * index + 10, f"n{index}", Usage(5, 2, calls=1), cached, "stop"
    )


def job_result(**kw: Any) -> JobResult:
    fields: dict[str, Any] = dict(
        text="answer",
        plan=PLAN,
        model=MODEL,
        chunk_outputs=[output(0), output(1, cached=True)],
        usage=Usage(100, 20, 30, 4, calls=3),
        cost=Price(0.1, 0.2, 0.05),
        cache_status=CacheStatus.PARTIAL,
        finish_reason="stop",
        timings=Timings(total_s=1.5, planning_s=0.000_002, first_token_s=-1.0),
        warnings=[JobWarning("HISTORY_TRIMMED", "older turns left out")],
    )
    fields.update(kw)
    return JobResult(**fields)


def test_a_plan_converts_field_by_field() -> None:
    assert PLAN.strategy is Strategy.MAP_REDUCE and len(PLAN.chunks) > 1  # the premise
    p = convert.plan(PLAN)
    assert p.strategy == pb.STRATEGY_MAP_REDUCE
    assert (p.model.vendor, p.model.model) == ("openai", "tiny")
    assert (p.model.context_window, p.model.max_output_tokens) == (100_000, 4096)
    assert (p.document_tokens, p.tokens_exact) == (PLAN.document_tokens, False)
    assert p.token_error == pytest.approx(PLAN.token_error) and p.token_error > 0
    assert p.effective_input_limit == PLAN.effective_input_limit
    assert [
        (c.index, c.start, c.end, c.tokens, c.overlap_start, c.content_hash) for c in p.chunks
    ] == [(c.index, c.start, c.end, c.tokens, c.overlap_start, c.content_hash) for c in PLAN.chunks]
    assert (p.map_calls, p.collapse_calls, p.reduce_calls) == (len(PLAN.chunks), 0, 1)
    assert p.estimated_input_tokens == PLAN.estimated_input_tokens
    assert p.estimated_output_tokens == PLAN.estimated_output_tokens
    assert p.estimated_cost.total_usd == pytest.approx(PLAN.estimated_cost.total_usd)
    assert p.within_budget and p.fits_single_pass == PLAN.fits_single_pass


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (CacheStatus.MISS, pb.CACHE_STATUS_MISS),
        (CacheStatus.HIT, pb.CACHE_STATUS_HIT),
        (CacheStatus.PARTIAL, pb.CACHE_STATUS_PARTIAL),
        (CacheStatus.BYPASS, pb.CACHE_STATUS_BYPASS),
    ],
)
def test_cache_statuses(status: CacheStatus, expected: pb.CacheStatus.ValueType) -> None:
    assert convert.result(job_result(cache_status=status)).cache_status == expected


def test_a_result_converts_with_its_chunks_usage_cost_and_timings() -> None:
    r = convert.result(job_result())
    assert (r.text, r.finish_reason) == ("answer", "stop")
    assert [(c.index, c.start, c.end, c.text) for c in r.chunk_results] == [
        (0, 0, 10, "n0"),
        (1, 10, 20, "n1"),
    ]
    # Each chunk says whether the cache answered it.
    assert [c.cache_status for c in r.chunk_results] == [pb.CACHE_STATUS_MISS, pb.CACHE_STATUS_HIT]
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens) == (
        100,
        20,
        30,
        4,
    )
    assert u.calls == 3
    c = r.cost
    assert (c.input_usd, c.output_usd, c.cached_input_usd) == (0.1, 0.2, 0.05)
    assert c.total_usd == pytest.approx(0.35)
    assert (r.timings.total.seconds, r.timings.total.nanos) == (1, 500_000_000)
    assert r.timings.planning.ToNanoseconds() == 2000
    assert r.timings.first_token.ToNanoseconds() == 0  # never negative
    assert [(w.code, w.message) for w in r.warnings] == [
        ("HISTORY_TRIMMED", "older turns left out")
    ]
    assert r.plan == convert.plan(PLAN) and r.model.model == "tiny"


@given(st.floats(min_value=-1e6, max_value=1e9, allow_nan=False))
def test_a_duration_is_what_from_nanoseconds_makes_of_it(seconds: float) -> None:
    expected = duration_pb2.Duration()
    expected.FromNanoseconds(max(0, round(seconds * 1e9)))
    timings = Timings(total_s=seconds, planning_s=seconds, first_token_s=seconds)
    t = convert.result(job_result(timings=timings)).timings
    assert t.total == t.planning == t.first_token == expected


def test_a_semantic_match_is_kept_and_absent_without_one() -> None:
    match = SemanticMatch(question="When does it close?", similarity=0.93)
    r = convert.result(job_result(cache_status=CacheStatus.SEMANTIC_HIT, semantic=match))
    assert r.HasField("semantic_match")
    assert r.semantic_match.question == "When does it close?"
    assert r.semantic_match.similarity == pytest.approx(0.93)
    assert not convert.result(job_result()).HasField("semantic_match")


def test_a_streams_result_is_the_analyze_response() -> None:
    r = job_result()
    plan_pb = convert.plan(r.plan)  # converted once by the Stream, for the plan and the result
    assert convert.stream_event(r, plan_pb).result == convert.result(r)
    assert convert.stream_event(PlanReady(r.plan), plan_pb).plan == convert.plan(r.plan)


def test_a_converted_plan_is_reused_when_given() -> None:
    given_plan = pb.Plan(document_tokens=42)
    assert convert.result(job_result(), given_plan).plan.document_tokens == 42
    assert convert.stream_event(PlanReady(PLAN), given_plan).plan.document_tokens == 42


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (PlanReady(PLAN), "plan"),
        (CallStarted(JobStage.COLLAPSE, 2, 5), "chunk_started"),
        (AnswerDelta(JobStage.REDUCE, 0, "par"), "delta"),
        (CallDone(output(3, stage=JobStage.REFINE)), "chunk_done"),
        (JobWarning("OUTPUT_TRUNCATED", "cut"), "warning"),
        (job_result(), "result"),
    ],
)
def test_each_event_becomes_its_stream_message(event: Any, kind: str) -> None:
    msg = convert.stream_event(event)
    assert msg.WhichOneof("event") == kind


def test_stream_events_keep_stage_index_and_text() -> None:
    started = convert.stream_event(CallStarted(JobStage.COLLAPSE, 2, 5)).chunk_started
    assert (started.stage, started.index, started.of) == (pb.STAGE_COLLAPSE, 2, 5)
    delta = convert.stream_event(AnswerDelta(JobStage.REDUCE, 0, "par")).delta
    assert (delta.stage, delta.index, delta.text) == (pb.STAGE_REDUCE, 0, "par")
    empty = convert.stream_event(AnswerDelta(JobStage.MAP, 0, ""))  # still a delta message
    assert empty.WhichOneof("event") == "delta" and empty.delta.stage == pb.STAGE_MAP
    done = convert.stream_event(CallDone(output(3, cached=True, stage=JobStage.REFINE))).chunk_done
    assert done.stage == pb.STAGE_REFINE
    assert (done.result.index, done.result.text) == (3, "n3")
    assert done.result.cache_status == pb.CACHE_STATUS_HIT
    stages = {
        JobStage.SINGLE: pb.STAGE_SINGLE,
        JobStage.MAP: pb.STAGE_MAP,
        JobStage.COLLAPSE: pb.STAGE_COLLAPSE,
        JobStage.REDUCE: pb.STAGE_REDUCE,
        JobStage.REFINE: pb.STAGE_REFINE,
    }
    for stage, value in stages.items():
        assert convert.stream_event(CallStarted(stage, 0, 1)).chunk_started.stage == value


def test_an_estimate_converts_with_its_candidates_and_warnings() -> None:
    fits = [
        ModelFit(MODEL, True, 9000, 1, Price(0.01, 0.02)),
        ModelFit(model("big", "anthropic"), False, 500, 4, Price(1.0), "needs map-reduce"),
    ]
    warning = JobWarning("TOKENS_ESTIMATED", "counts are estimates")
    e = convert.estimate(Estimate(PLAN, fits, [warning]))
    assert e.plan == convert.plan(PLAN)
    assert [(c.model.model, c.fits_single_pass, c.calls, c.reason) for c in e.candidates] == [
        ("tiny", True, 1, ""),
        ("big", False, 4, "needs map-reduce"),
    ]
    assert e.candidates[0].effective_input_limit == 9000
    assert e.candidates[0].estimated_cost.total_usd == pytest.approx(0.03)
    assert [w.code for w in e.warnings] == ["TOKENS_ESTIMATED"]
