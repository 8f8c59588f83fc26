"""Which configured model serves a request: named, preferred, or the default."""

from __future__ import annotations

from collections.abc import Sequence

from longread_server.domain import FieldViolation, InvalidRequest, ModelInfo, ModelPreference
from longread_server.plan.catalog import Catalog
from longread_server.plan.planner import ModelFit


def _unknown(field: str, description: str) -> InvalidRequest:
    return InvalidRequest([FieldViolation(field, description)], "UNKNOWN_MODEL")


class ModelResolver:
    """The catalog's models that a configured upstream serves, and the choice among them."""

    def __init__(
        self,
        catalog: Catalog,
        served: dict[str, tuple[str, ...]],
        default_model: str,
        default_vendor: str = "",
    ) -> None:
        """``served``: upstream name -> the models it is limited to (empty: all of its
        catalog models)."""
        self._catalog = catalog
        self._served = served
        self._default_model = default_model
        self._default_vendor = default_vendor
        self.models = [m for m in catalog.models() if self.serves(m)]

    def serves(self, m: ModelInfo) -> bool:
        only = self._served.get(m.vendor)
        return only is not None and (not only or m.model in only)

    def needs_fits(self, model: str, preference: ModelPreference) -> bool:
        """Whether choosing needs every model's fit (a preference and no model named)."""
        return not model and preference is not ModelPreference.DEFAULT

    def resolve(
        self, vendor: str, model: str, preference: ModelPreference, fits: Sequence[ModelFit]
    ) -> ModelInfo:
        """The model for a request; ``fits`` cheapest first (needed for CHEAPEST)."""
        if vendor and vendor not in self._served:
            known = ", ".join(sorted(self._served)) or "none"
            raise _unknown("model.vendor", f"unknown vendor {vendor!r}; configured: {known}")
        if not model:
            if preference is ModelPreference.CHEAPEST:
                for f in fits:
                    if f.fits_single_pass and (not vendor or f.model.vendor == vendor):
                        return f.model
                largest = max((m.context_window for m in self.models), default=0)
                raise InvalidRequest(
                    [
                        FieldViolation(
                            "model.preference",
                            "no configured model fits the whole document in one call "
                            f"(largest context: {largest} tokens); name a model to use "
                            "map-reduce",
                            "DOES_NOT_FIT",
                        )
                    ],
                    "DOES_NOT_FIT",
                )
            if preference is ModelPreference.LARGEST_CONTEXT:
                pool = [m for m in self.models if not vendor or m.vendor == vendor]
                if pool:
                    return max(pool, key=lambda m: (m.context_window, -m.input_per_mtok))
            model = self._default_model
            vendor = vendor or self._default_vendor
        vendors = [vendor] if vendor else list(self._catalog.vendors_of(model))
        served = [
            m for v in vendors if (m := self._catalog.get(v, model)) is not None and self.serves(m)
        ]
        if len(served) == 1:
            return served[0]
        if not served:
            known = ", ".join(sorted({m.model for m in self.models})) or "none"
            where = f" from vendor {vendor!r}" if vendor else ""
            raise _unknown("model.model", f"unknown model {model!r}{where}; known: {known}")
        names = ", ".join(m.vendor for m in served)
        raise _unknown("model.vendor", f"{model!r} is served by {names}: name one")
