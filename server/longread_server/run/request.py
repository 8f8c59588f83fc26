"""A validated request in domain terms: what ``api/`` hands to the run layer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from longread_server.domain import ModelPreference
from longread_server.plan.planner import JobSpec
from longread_server.run.runner import Sampling


@dataclass(slots=True)
class JobRequest:
    spec: JobSpec
    vendor: str = ""
    model: str = ""
    preference: ModelPreference = ModelPreference.DEFAULT
    sampling: Sampling = field(default_factory=Sampling)
    cache_mode: str = "default"  # default | bypass | no_store | only_if_cached
    cache_ttl_s: float | None = None
    semantic: bool | None = None  # semantic reuse asked for (None: as the tenant is set)
    min_similarity: float | None = None  # None: cache.semantic.threshold
    labels: dict[str, str] = field(default_factory=dict)
    exact_token_count: bool = False

    def plan_key(self, with_fits: bool) -> bytes:
        """A digest of everything the plan (and the model fits) depend on: equal digests,
        equal plans."""
        s = self.spec
        digest = hashlib.blake2b(digest_size=16)
        digest.update(s.text.encode("utf-8", "surrogatepass"))
        digest.update(
            repr(
                (
                    with_fits,
                    s.instruction,
                    s.system,
                    s.history,
                    s.max_output_tokens,
                    s.max_chunk_tokens,
                    s.overlap_tokens,
                    s.strategy,
                    s.max_cost_usd,
                    self.vendor,
                    self.model,
                    self.preference,
                )
            ).encode("utf-8", "surrogatepass")
        )
        return digest.digest()
