"""The model catalog: context windows, output limits and prices, as data (catalog.toml)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from longread_server.domain import ModelInfo, Usage

# Relative error of cl100k_base counts for models whose own tokenizer they are not. OpenAI's
# o200k models count within ~10 % of cl100k on English and fewer tokens on CJK (so cl100k errs
# on the safe side there); other vendors' tokenizers differ more (Claude counts ~10-20 % more
# than cl100k on English).
TOKEN_ERROR_BY_VENDOR = {"openai": 0.10, "anthropic": 0.20}
DEFAULT_TOKEN_ERROR = 0.25


def token_error(model: ModelInfo) -> float:
    """The relative error bound of this model's token counts made with its own ``tokenizer``
    (0 when that is exact)."""
    if model.tokens_exact:
        return 0.0
    return estimate_error(model)


def estimate_error(model: ModelInfo) -> float:
    """The relative error bound of a cl100k_base count for this model, exact or not."""
    return TOKEN_ERROR_BY_VENDOR.get(model.vendor, DEFAULT_TOKEN_ERROR)


@dataclass(frozen=True, slots=True)
class Price:
    """A cost in USD split by what was paid for."""

    input_usd: float = 0.0
    output_usd: float = 0.0
    cached_input_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.input_usd + self.output_usd + self.cached_input_usd

    def __add__(self, other: Price) -> Price:
        return Price(
            self.input_usd + other.input_usd,
            self.output_usd + other.output_usd,
            self.cached_input_usd + other.cached_input_usd,
        )


def price(model: ModelInfo, usage: Usage) -> Price:
    """What ``usage`` costs at the catalog's list prices.

    Input read from the vendor's prompt cache is priced at ``cached_input_per_mtok`` (under
    ``cached_input_usd``); input written to it at ``cache_write_per_mtok`` (Anthropic charges
    1.25x input for 5-minute writes; 0 means the plain input price), the 1-hour part of it at
    ``cache_write_1h_per_mtok`` (2x input), counted in ``input_usd`` since it is uncached
    input; the rest at the input price.
    """
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    written_1h = min(usage.cache_write_1h_tokens, written)
    plain = max(0, usage.input_tokens - cached - written)
    write_price = model.cache_write_per_mtok or model.input_per_mtok
    write_1h_price = model.cache_write_1h_per_mtok or write_price
    writes = (written - written_1h) * write_price + written_1h * write_1h_price
    return Price(
        input_usd=(plain * model.input_per_mtok + writes) / 1e6,
        output_usd=usage.output_tokens * model.output_per_mtok / 1e6,
        cached_input_usd=cached * model.cached_input_per_mtok / 1e6,
    )


class Catalog:
    """Models by (vendor, model). Lookups by model id alone resolve when the id is unique."""

    def __init__(self, models: Iterable[ModelInfo]) -> None:
        self._by_key: dict[tuple[str, str], ModelInfo] = {}
        for m in models:
            self._by_key[(m.vendor, m.model)] = m

    @classmethod
    def builtin(cls, overrides: Iterable[ModelInfo] = ()) -> Catalog:
        """The shipped catalog, with ``overrides`` added or replacing entries."""
        text = resources.files("longread_server.plan").joinpath("catalog.toml").read_text()
        data = tomllib.loads(text)
        models = [ModelInfo(**entry) for entry in data["models"]]
        return cls([*models, *overrides])

    def models(self, vendors: Iterable[str] | None = None) -> list[ModelInfo]:
        wanted = None if vendors is None else set(vendors)
        return [m for m in self._by_key.values() if wanted is None or m.vendor in wanted]

    def get(self, vendor: str, model: str) -> ModelInfo | None:
        return self._by_key.get((vendor, model))

    def vendors_of(self, model: str) -> list[str]:
        return [v for (v, m) in self._by_key if m == model]
