"""ModelResolver: which configured model serves a request, and the errors that name the field
to change."""

from __future__ import annotations

import pytest
from longread_server.domain import InvalidRequest, ModelInfo, ModelPreference
from longread_server.plan.catalog import Catalog, Price
from longread_server.plan.planner import ModelFit
from longread_server.run.models import ModelResolver

from tests.unit.run.support import model

ALPHA = model("alpha", "a", context=100_000, input_per_mtok=1.0)
SHARED_A = model("shared", "a", context=50_000, input_per_mtok=0.5)
SHARED_B = model("shared", "b", context=60_000, input_per_mtok=0.4)
BETA = model("beta", "b", context=200_000, input_per_mtok=3.0)
HIDDEN_B = model("hidden", "b", context=900_000, input_per_mtok=0.1)  # not in b's list
GAMMA = model("gamma", "c", context=500_000, input_per_mtok=0.1)  # no upstream named c
CATALOG = Catalog([ALPHA, SHARED_A, SHARED_B, BETA, HIDDEN_B, GAMMA])
SERVED = {"a": (), "b": ("shared", "beta")}  # a: all of its models; b: only these


def resolver(default_model: str = "alpha", default_vendor: str = "") -> ModelResolver:
    return ModelResolver(CATALOG, SERVED, default_model, default_vendor)


def violation(e: pytest.ExceptionInfo[InvalidRequest]) -> tuple[str, str, str]:
    (v,) = e.value.violations
    return v.field, e.value.reason, v.description


def fit(m: ModelInfo, fits: bool, usd: float) -> ModelFit:
    return ModelFit(m, fits, 1000, 1 if fits else 3, Price(input_usd=usd))


def test_only_the_models_a_configured_upstream_serves_are_offered() -> None:
    assert {(m.vendor, m.model) for m in resolver().models} == {
        ("a", "alpha"),
        ("a", "shared"),
        ("b", "shared"),
        ("b", "beta"),
    }


def test_a_named_model_served_once_needs_no_vendor() -> None:
    assert resolver().resolve("", "beta", ModelPreference.DEFAULT, []) == BETA
    assert resolver().resolve("b", "beta", ModelPreference.CHEAPEST, []) == BETA


def test_a_model_two_upstreams_serve_needs_the_vendor() -> None:
    r = resolver()
    with pytest.raises(InvalidRequest) as info:
        r.resolve("", "shared", ModelPreference.DEFAULT, [])
    field, reason, text = violation(info)
    assert (field, reason) == ("model.vendor", "UNKNOWN_MODEL")
    assert "a, b" in text
    assert r.resolve("a", "shared", ModelPreference.DEFAULT, []) == SHARED_A
    assert r.resolve("b", "shared", ModelPreference.DEFAULT, []) == SHARED_B


def test_an_unknown_vendor_is_named_with_the_configured_ones() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolver().resolve("c", "gamma", ModelPreference.DEFAULT, [])
    field, reason, text = violation(info)
    assert (field, reason) == ("model.vendor", "UNKNOWN_MODEL")
    assert "'c'" in text and "configured: a, b" in text


@pytest.mark.parametrize(
    ("vendor", "name"),
    [
        ("", "gpt-9"),  # in no catalog entry
        ("", "gamma"),  # in the catalog, but no upstream serves its vendor
        ("", "hidden"),  # its upstream is limited to other models
        ("b", "alpha"),  # another upstream's model
    ],
)
def test_an_unknown_model_is_reported_on_the_model_field(vendor: str, name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        resolver().resolve(vendor, name, ModelPreference.DEFAULT, [])
    field, reason, text = violation(info)
    assert (field, reason) == ("model.model", "UNKNOWN_MODEL")
    assert repr(name) in text and "known: alpha, beta, shared" in text
    assert (f"from vendor {vendor!r}" in text) == bool(vendor)


def test_cheapest_takes_the_first_fit_that_runs_in_one_call() -> None:
    fits = [fit(SHARED_B, False, 0.1), fit(SHARED_A, True, 0.2), fit(BETA, True, 0.3)]
    assert resolver().resolve("", "", ModelPreference.CHEAPEST, fits) == SHARED_A
    # Within the named upstream only.
    assert resolver().resolve("b", "", ModelPreference.CHEAPEST, fits) == BETA


def test_cheapest_without_a_single_pass_fit_says_it_does_not_fit() -> None:
    fits = [fit(SHARED_B, False, 0.1), fit(BETA, False, 0.3)]
    with pytest.raises(InvalidRequest) as info:
        resolver().resolve("", "", ModelPreference.CHEAPEST, fits)
    field, reason, text = violation(info)
    assert (field, reason) == ("model.preference", "DOES_NOT_FIT")
    assert "200000 tokens" in text  # the largest served context, not an unserved one


def test_largest_context_among_the_served_models() -> None:
    r = resolver()
    assert r.resolve("", "", ModelPreference.LARGEST_CONTEXT, []) == BETA
    assert r.resolve("a", "", ModelPreference.LARGEST_CONTEXT, []) == ALPHA


def test_largest_context_breaks_ties_by_the_lower_input_price() -> None:
    wide = model("wide", "a", context=200_000, input_per_mtok=1.0)
    r = ModelResolver(Catalog([ALPHA, BETA, wide]), SERVED, "alpha")
    assert r.resolve("", "", ModelPreference.LARGEST_CONTEXT, []) == wide


def test_the_default_model_serves_a_request_that_names_none() -> None:
    assert resolver().resolve("", "", ModelPreference.DEFAULT, []) == ALPHA
    # A default model that two upstreams serve is settled by the default vendor.
    assert resolver("shared", "b").resolve("", "", ModelPreference.DEFAULT, []) == SHARED_B
    with pytest.raises(InvalidRequest):
        resolver("shared").resolve("", "", ModelPreference.DEFAULT, [])


def test_fits_are_needed_only_to_choose_by_preference() -> None:
    r = resolver()
    assert r.needs_fits("", ModelPreference.CHEAPEST)
    assert r.needs_fits("", ModelPreference.LARGEST_CONTEXT)
    assert not r.needs_fits("", ModelPreference.DEFAULT)
    assert not r.needs_fits("beta", ModelPreference.CHEAPEST)
