"""The knowledge assistant: German answers only from the approved sources, with the source, else a handover."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from leadbot.knowledge.embedders import Embedder, make_embedder
from leadbot.knowledge.grounding import ungrounded_claims
from leadbot.knowledge.index import Hit, KnowledgeIndex
from leadbot.knowledge.llm import UNKNOWN_MARKER, ChatClient, LLMError
from leadbot.knowledge.settings import APPROVED_SOURCES, KnowledgeSettings

log = logging.getLogger(__name__)

HANDOVER_PHRASE = "Ich gebe es ans Team weiter"
LOW_CONFIDENCE_TEXT = (
    f"Da bin ich mir als digitaler Assistent nicht sicher, und raten möchte ich nicht. {HANDOVER_PHRASE}, "
    "jemand meldet sich bald bei dir 🙂"
)
LEGAL_ADVICE_TEXT = (
    f"Eine Rechtsberatung kann ich als digitaler Assistent nicht geben. {HANDOVER_PHRASE}, "
    "jemand meldet sich bald bei dir."
)
OFF_TOPIC_TEXT = (
    "Dazu kann ich dir leider nichts sagen 🙂 Ich bin der digitale Assistent und helfe dir bei Fragen zu unserem "
    "WhatsApp-Bot: Angebot, Preise, Ablauf und Datenschutz."
)

# Questions that are outside the assistant's remit whatever the retrieval score says.
# Word starts only: "gericht" must not match "eingerichtet".
_LEGAL_ADVICE = re.compile(
    r"\b(?:rechtsanw[aä]lt|anw[aä]lt|verklag|klage\b|abmahn|rechtsberat|rechtssicher|bußgeld|gericht|steuerberat|haftbar)",
    re.IGNORECASE,
)
_OFF_TOPIC = re.compile(
    r"\b(?:wetter|regnet|temperatur|fußball|bundesliga|rezept|kochen|witz|aktienkurs|börse|bitcoin|politik|"
    r"hauptstadt|horoskop)",
    re.IGNORECASE,
)
_SOURCE_NOTE = re.compile(r"\s*\(?Quelle:[^)\n]*\)?\s*$")
_MAX_SENTENCES = 3
_MAX_CHARS = 320  # a section longer than this is shortened to its most relevant sentences


@dataclass(frozen=True)
class Answer:
    text: str  # German WhatsApp-ready answer incl. source naming, or the escalation text
    source: str | None  # e.g. "pricing.md" (None when escalated or declined)
    score: float  # hybrid retrieval score of the best section (0.0 when no retrieval happened)
    escalate: bool  # True => caller hands over to a human ("Ich gebe es ans Team weiter")
    reason: str  # "answered" | "low_confidence" | "out_of_scope" | "ungrounded"
    best_source: str | None = None  # best-matching source even when not answered, for the knowledge_gaps log


class KnowledgeAssistant:
    def __init__(self, index: KnowledgeIndex, min_score: float, llm: ChatClient | None = None) -> None:
        self._index = index
        self._min_score = min_score
        self._llm = llm

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings | None = None, embedder: Embedder | None = None,
                      progress: bool = False) -> KnowledgeAssistant:
        """Load the persisted index (rebuilding it first when a source or the model changed). Call once at start."""
        settings = settings or KnowledgeSettings.from_env()
        index = KnowledgeIndex.load_or_build(
            settings.knowledge_dir, APPROVED_SOURCES, settings.index_dir,
            embedder or make_embedder(settings.embedding_model), settings.dense_weight, progress=progress,
        )
        llm = None
        if settings.llm_enabled:
            llm = ChatClient(settings.llm_base_url, settings.llm_model, settings.llm_api_key,
                             settings.llm_timeout_seconds)
        return cls(index, settings.min_score, llm)

    def retrieve(self, question: str, k: int = 3) -> list[Hit]:
        return self._index.search(question, self._index.embed_query(question), k)

    def answer(self, question: str) -> Answer:
        question = " ".join(question.split())
        if _LEGAL_ADVICE.search(question):
            return Answer(LEGAL_ADVICE_TEXT, None, 0.0, True, "out_of_scope")
        if _OFF_TOPIC.search(question) or not question:
            return Answer(OFF_TOPIC_TEXT, None, 0.0, False, "out_of_scope")
        query_vector = self._index.embed_query(question)
        hits = self._index.search(question, query_vector, k=3)
        best = hits[0]
        if best.score < self._min_score:
            log.info("knowledge gap (score %.3f < %.3f, best %s): %s", best.score, self._min_score,
                     best.chunk.source, question)
            return Answer(LOW_CONFIDENCE_TEXT, None, best.score, True, "low_confidence", best.chunk.source)
        if self._llm is not None:
            return self._generated(self._llm, question, hits, query_vector)
        return self._extractive(question, best, query_vector)

    def _extractive(self, question: str, hit: Hit, query_vector: np.ndarray) -> Answer:
        text = hit.chunk.body
        if len(text) > _MAX_CHARS:
            # Long section: its first sentence carries the subject; add the most relevant ones, in reading order.
            sentences = hit.chunk.sentences
            ranked = self._index.rank_sentences(question, query_vector, hit.chunk)
            chosen = sorted({0, *ranked[: _MAX_SENTENCES - 1]})
            text = sentences[chosen[0]]
            for position in chosen[1:]:
                if len(text) + len(sentences[position]) <= _MAX_CHARS:
                    text += " " + sentences[position]
        return Answer(f"{text} (Quelle: {hit.chunk.label})", hit.chunk.source, hit.score, False, "answered",
                      hit.chunk.source)

    def _generated(self, llm: ChatClient, question: str, hits: list[Hit], query_vector: np.ndarray) -> Answer:
        best = hits[0]
        try:
            reply = llm.answer(question, hits)
        except LLMError as exc:
            log.warning("%s; answering extractively", exc)
            return self._extractive(question, best, query_vector)
        if not reply or UNKNOWN_MARKER in reply or HANDOVER_PHRASE in reply:
            return Answer(LOW_CONFIDENCE_TEXT, None, best.score, True, "low_confidence", best.chunk.source)
        evidence = "\n".join(f"{hit.chunk.label}: {hit.chunk.body}" for hit in hits)
        claims = ungrounded_claims(reply, evidence)
        if claims:
            log.warning("LLM answer not grounded in the sources (%s), handing over: %r", ", ".join(claims), reply)
            return Answer(LOW_CONFIDENCE_TEXT, None, best.score, True, "ungrounded", best.chunk.source)
        # The source is always named by us, from the best section, never by the model.
        reply = f"{_SOURCE_NOTE.sub('', reply)} (Quelle: {best.chunk.label})"
        return Answer(reply, best.chunk.source, best.score, False, "answered", best.chunk.source)
