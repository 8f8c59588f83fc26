"""Counting and planning a request: the tokenizer, the model, the plan, remembered.

A request that comes back (a cache hit, a retry, a client asking again) is planned once: plans
of small requests are remembered by the request's digest, the encodings of long documents by
the document's (see ``memo.py`` for the sizes). Plans hold offsets, never text, and are never
changed after planning, so one can serve many requests.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import replace

from longread_server.domain import FieldViolation, InvalidRequest, too_large
from longread_server.memo import OFFLOAD_MIN_CHARS, REMEMBER_MAX_CHARS, Memo
from longread_server.plan.catalog import estimate_error
from longread_server.plan.chunker import text_token_lengths
from longread_server.plan.encodings import EncodingMemo
from longread_server.plan.planner import (
    JobPlan,
    JobSpec,
    ModelFit,
    PlanDefaults,
    PlanError,
    overhead_tokens,
    plan_job,
    quick_fit,
)
from longread_server.plan.tokenizers import Tokenizer, TooManyTokens, get_tokenizer
from longread_server.run.models import ModelResolver
from longread_server.run.request import JobRequest

PLANS = 1024
ENCODINGS = 8
# The two encodings' token ratio is measured on up to RATIO_SLICES slices of RATIO_SLICE_CHARS
# characters spread over the document (the whole of a shorter one); fits scaled by it carry
# RATIO_MARGIN more error, for what the slices miss.
RATIO_SLICES = 16
RATIO_SLICE_CHARS = 4096
RATIO_MARGIN = 0.05


def _encoding_ratio(text: str, counter: Tokenizer, other: Tokenizer) -> float:
    """Tokens of ``other`` per token of ``counter`` on ``text``, from samples of it."""
    if len(text) <= RATIO_SLICES * RATIO_SLICE_CHARS:
        sample = text
    else:
        step = len(text) // RATIO_SLICES
        sample = "\n".join(
            text[i * step : i * step + RATIO_SLICE_CHARS] for i in range(RATIO_SLICES)
        )
    return other.count(sample) / max(1, counter.count(sample))


def plan_error(e: PlanError) -> InvalidRequest:
    return InvalidRequest([FieldViolation(e.field, str(e), e.reason)], e.reason)


class Planning:
    """Plans requests against the configured models; thread-safe (long documents are
    planned in worker threads)."""

    def __init__(
        self,
        models: ModelResolver,
        defaults: PlanDefaults,
        max_document_tokens: int,
        encodings: EncodingMemo | None = None,
    ) -> None:
        self.models = models
        self._defaults = defaults
        self._max_tokens = max_document_tokens
        self._plans: Memo[bytes, tuple[JobPlan, list[ModelFit]]] = Memo(PLANS)
        self.encodings = encodings if encodings is not None else EncodingMemo(ENCODINGS)

    async def plan(self, request: JobRequest, with_fits: bool) -> tuple[JobPlan, list[ModelFit]]:
        """The plan of ``request`` and, ``with_fits`` (or when the choice of model needs
        them), every served model's fit, cheapest first."""
        size = len(request.spec.text)
        if size > OFFLOAD_MIN_CHARS:
            return await asyncio.to_thread(self.plan_now, request, with_fits)
        if size > REMEMBER_MAX_CHARS:
            return self.plan_now(request, with_fits)
        return self._plans.get_or_make(
            request.plan_key(with_fits), lambda: self.plan_now(request, with_fits)
        )

    def plan_now(self, request: JobRequest, with_fits: bool) -> tuple[JobPlan, list[ModelFit]]:
        """Counts tokens, resolves the model, plans the job. The plan counts with the model's
        own encoding (exact for OpenAI's cl100k and o200k models). Every served model's fit,
        when asked for or needed to choose, comes from that one count: scaled, for a model of
        the other encoding, by the two encodings' ratio on samples of the document
        (``_encoding_ratio``), within the model's error plus the sampling's."""
        spec = request.spec
        needs_fits = self.models.needs_fits(request.model, request.preference)
        model = (
            None
            if needs_fits
            else self.models.resolve(request.vendor, request.model, request.preference, [])
        )
        counter = get_tokenizer(model.tokenizer if model else "cl100k_base")
        lens = self._token_lengths(counter, spec.text)
        fits: list[ModelFit] = []
        if with_fits or needs_fits:
            fits = self._fits(spec, counter, len(lens))
        if model is None:
            model = self.models.resolve(request.vendor, request.model, request.preference, fits)
        tokenizer = get_tokenizer(model.tokenizer)
        if tokenizer.encoding_name != counter.encoding_name:
            lens = self._token_lengths(tokenizer, spec.text)
        try:
            plan = plan_job(spec, model, tokenizer, self._defaults, lens=lens)
        except PlanError as e:
            raise plan_error(e) from e
        return plan, fits

    def _fits(self, spec: JobSpec, counter: Tokenizer, doc_tokens: int) -> list[ModelFit]:
        """Every served model's fit from one count of the document, cheapest first."""
        overhead = overhead_tokens(spec, counter)
        ratios: dict[str, float] = {}
        fits = []
        for m in self.models.models:
            own = get_tokenizer(m.tokenizer)
            if own.encoding_name == counter.encoding_name:
                fits.append(quick_fit(spec, m, doc_tokens, overhead, self._defaults))
                continue
            name = own.encoding_name
            if name not in ratios:
                ratios[name] = _encoding_ratio(spec.text, counter, own)
            error = (0.0 if m.tokens_exact else estimate_error(m)) + RATIO_MARGIN
            tokens = math.ceil(doc_tokens * ratios[name])
            fits.append(quick_fit(spec, m, tokens, overhead, self._defaults, error))
        return sorted(fits, key=lambda f: (f.calls == 0, f.estimated_cost.total_usd, f.model.model))

    async def replan_exact(self, request: JobRequest, plan: JobPlan, exact: int) -> JobPlan:
        """``plan`` again with the vendor's own count of the document's tokens; the cuts come
        from the remembered encoding."""
        tokenizer = get_tokenizer(plan.model.tokenizer)

        def replan() -> JobPlan:
            lens = self._token_lengths(tokenizer, request.spec.text)
            return plan_job(request.spec, plan.model, tokenizer, self._defaults, exact, lens)

        try:
            fresh = await asyncio.to_thread(replan)
        except PlanError as e:
            raise plan_error(e) from e
        return replace(fresh, tokens_exact=True, token_error=0.0)

    def _token_lengths(self, tokenizer: Tokenizer, text: str) -> Sequence[int]:
        """The byte length of each of the document's tokens: remembered for long documents
        (Estimate, then Analyze, tokenizes once); short ones are planned from scratch. A
        document over the token limit is refused as soon as counting passes the limit."""
        limit = self._max_tokens
        try:
            if len(text) > REMEMBER_MAX_CHARS:
                return self.encodings.token_lengths(tokenizer, text, limit)
            return text_token_lengths(tokenizer, text, limit)
        except TooManyTokens:
            raise too_large("document.text", "the document", None, limit, "tokens") from None
