"""The persisted knowledge index: FAISS over chunk embeddings plus a char-n-gram TF-IDF for a hybrid score."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm import tqdm

from leadbot.knowledge.embedders import Embedder
from leadbot.knowledge.sources import Chunk, chunk_markdown, content_hash, load_sources

log = logging.getLogger(__name__)

_META = "meta.json"
_CHUNKS = "chunks.json"
_CHUNK_INDEX = "chunks.faiss"
_SENTENCE_VECTORS = "sentences.npy"
_BATCH = 16


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # hybrid score used for the confidence decision
    dense: float
    lexical: float


def _lexical_vectorizer(texts: list[str]) -> TfidfVectorizer:
    # Character n-grams inside word boundaries tolerate typos and German compounds ("Einrichtungsgebühr").
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True).fit(texts)


def _embed(embedder: Embedder, texts: list[str], progress: bool, desc: str) -> np.ndarray:
    batches = range(0, len(texts), _BATCH)
    parts = [
        embedder.embed_passages(texts[start : start + _BATCH])
        for start in tqdm(batches, desc=desc, unit="batch", disable=not progress)
    ]
    return np.vstack(parts).astype(np.float32) if parts else np.zeros((0, embedder.dim), np.float32)


class KnowledgeIndex:
    def __init__(self, chunks: list[Chunk], chunk_index: faiss.Index, sentence_vectors: np.ndarray,
                 embedder: Embedder, dense_weight: float, content_hash: str) -> None:
        self.chunks = chunks
        self.content_hash = content_hash
        self._chunk_index = chunk_index
        self._sentence_vectors = sentence_vectors
        self._sentence_owner = np.array([i for i, c in enumerate(chunks) for _ in c.sentences], dtype=np.int64)
        self._embedder = embedder
        self._dense_weight = dense_weight
        self._lexical = _lexical_vectorizer([c.passage for c in chunks])
        self._chunk_terms = self._lexical.transform([c.passage for c in chunks])
        self._sentence_terms = self._lexical.transform([s for c in chunks for s in c.sentences])

    # -- building and loading -------------------------------------------------------------------------------

    @classmethod
    def load_or_build(cls, knowledge_dir: Path, sources: tuple[str, ...], index_dir: Path, embedder: Embedder,
                      dense_weight: float, progress: bool = False, force: bool = False) -> KnowledgeIndex:
        """Load the persisted index if it matches the current sources and model, else (re)build and persist it."""
        texts = load_sources(knowledge_dir, sources)
        digest = content_hash(texts, embedder.name)
        meta_path = index_dir / _META
        if not force and meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("content_hash") == digest:
                log.info("knowledge index %s is up to date (%s)", index_dir, digest[:12])
                return cls._load(index_dir, embedder, dense_weight, digest)
            log.info("knowledge sources or model changed, rebuilding %s", index_dir)
        chunks = [chunk for name in sources for chunk in chunk_markdown(name, texts[name])]
        if not chunks:
            raise ValueError(f"no sections found in the knowledge sources in {knowledge_dir}")
        chunk_vectors = _embed(embedder, [c.passage for c in chunks], progress, "sections")
        sentence_vectors = _embed(embedder, [s for c in chunks for s in c.sentences], progress, "sentences")
        chunk_index = faiss.IndexFlatIP(embedder.dim)
        chunk_index.add(chunk_vectors)
        _persist(index_dir, chunks, chunk_index, sentence_vectors, digest, embedder.name)
        return cls(chunks, chunk_index, sentence_vectors, embedder, dense_weight, digest)

    @classmethod
    def _load(cls, index_dir: Path, embedder: Embedder, dense_weight: float, digest: str) -> KnowledgeIndex:
        raw = json.loads((index_dir / _CHUNKS).read_text(encoding="utf-8"))
        chunks = [Chunk(c["source"], c["source_title"], c["heading"], tuple(c["sentences"])) for c in raw]
        chunk_index = faiss.read_index(str(index_dir / _CHUNK_INDEX))
        sentence_vectors = np.load(index_dir / _SENTENCE_VECTORS)
        return cls(chunks, chunk_index, sentence_vectors, embedder, dense_weight, digest)

    # -- searching ------------------------------------------------------------------------------------------

    def embed_query(self, question: str) -> np.ndarray:
        return self._embedder.embed_queries([question])

    def search(self, question: str, query_vector: np.ndarray, k: int = 3) -> list[Hit]:
        """The k best sections by hybrid score (dense cosine and char-n-gram cosine, weighted)."""
        dense = np.zeros(len(self.chunks), dtype=np.float32)
        scores, ids = self._chunk_index.search(query_vector, len(self.chunks))
        dense[ids[0]] = scores[0]
        lexical = (self._chunk_terms @ self._lexical.transform([question]).T).toarray().ravel()
        hybrid = self._dense_weight * dense + (1.0 - self._dense_weight) * lexical
        best = np.argsort(-hybrid)[:k]
        return [Hit(self.chunks[i], float(hybrid[i]), float(dense[i]), float(lexical[i])) for i in best]

    def rank_sentences(self, question: str, query_vector: np.ndarray, chunk: Chunk) -> list[int]:
        """Positions of the chunk's sentences, most relevant first."""
        chunk_id = self.chunks.index(chunk)
        rows = np.flatnonzero(self._sentence_owner == chunk_id)
        dense = self._sentence_vectors[rows] @ query_vector[0]
        lexical = (self._sentence_terms[rows] @ self._lexical.transform([question]).T).toarray().ravel()
        hybrid = self._dense_weight * dense + (1.0 - self._dense_weight) * lexical
        return [int(i) for i in np.argsort(-hybrid)]


def _persist(index_dir: Path, chunks: list[Chunk], chunk_index: faiss.Index, sentence_vectors: np.ndarray,
             digest: str, embedder_name: str) -> None:
    """Write next to the old files and rename, meta.json last, so a concurrent reader never sees a mix."""
    index_dir.mkdir(parents=True, exist_ok=True)

    def write(name: str, writer: Callable[[str], None]) -> None:
        fd, tmp = tempfile.mkstemp(dir=index_dir, prefix=f".{name}.")
        os.close(fd)
        writer(tmp)
        os.replace(tmp, index_dir / name)

    def save_vectors(path: str) -> None:
        with open(path, "wb") as handle:
            np.save(handle, sentence_vectors)

    chunk_json = json.dumps([asdict(c) for c in chunks], ensure_ascii=False, indent=1)
    write(_CHUNKS, lambda p: Path(p).write_text(chunk_json, encoding="utf-8"))
    write(_CHUNK_INDEX, lambda p: faiss.write_index(chunk_index, p))
    write(_SENTENCE_VECTORS, save_vectors)
    meta = {"content_hash": digest, "embedder": embedder_name, "chunks": len(chunks), "dim": chunk_index.d}
    write(_META, lambda p: Path(p).write_text(json.dumps(meta, indent=1), encoding="utf-8"))
    log.info("knowledge index written to %s (%d sections)", index_dir, len(chunks))
