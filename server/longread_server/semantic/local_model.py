"""The offline embedding model: WordLlama's static 256-dimension model, from the files its wheel
ships (weights and tokenizer), never a download.

A static model (one vector per token, pooled) embeds a short question in tens of
microseconds on one core, on the event loop, with no network and no GPU; it weighs words, not
facts, which is why a reuse must first agree on the question's facts (``facts.py``).

WordLlama looks for its bundled files under a folder name that differs from the one its wheel
installs (``tokenizer/`` against ``tokenizers/``) and falls back to a hub download; pointing
its cache folder at its own package makes it find both files and never reach the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    Vector = Any

MODEL = "wordllama-l2_supercat-256"
DIMENSIONS = 256


class Embedder(Protocol):
    """Text to a unit vector."""

    name: str  # the model: vectors of different models are never compared

    def embed_now(self, text: str) -> Vector: ...


class LocalEmbedder:
    """WordLlama's bundled model; ``load`` raises ImportError without the ``semantic`` extra."""

    name = f"local:{MODEL}"

    def __init__(self, model: Any) -> None:
        self._model = model

    @classmethod
    def load(cls) -> LocalEmbedder:
        import wordllama
        from wordllama import WordLlama

        bundled = Path(wordllama.__file__).parent
        model = WordLlama.load(
            config="l2_supercat", dim=DIMENSIONS, cache_dir=bundled, disable_download=True
        )
        return cls(model)

    def embed_now(self, text: str) -> Vector:
        import numpy as np

        vector = np.asarray(self._model.embed(text, norm=True)[0], dtype=np.float32)
        return vector
