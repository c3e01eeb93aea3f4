"""Loading the approved Markdown sources and chunking them by heading."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Bump when the chunking changes, so persisted indexes are rebuilt.
CHUNKER_VERSION = "1"

_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ0-9„\"])")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


@dataclass(frozen=True)
class Chunk:
    source: str  # file name, e.g. "pricing.md"
    source_title: str  # the file's "# " heading, used when naming the source, e.g. "Preise"
    heading: str  # heading path below the title, e.g. "Pakete nach dem Pilot › Starter" ("" for the intro)
    sentences: tuple[str, ...]

    @property
    def body(self) -> str:
        return " ".join(self.sentences)

    @property
    def label(self) -> str:
        """How the source is named in an answer, e.g. "Preise – Pilot (risikofrei)"."""
        if not self.heading:
            return self.source_title
        return f"{self.source_title} – {self.heading.split(' › ')[-1]}"

    @property
    def passage(self) -> str:
        """The text that is embedded and searched: title, heading path and body."""
        return f"{self.source_title}: {self.heading or self.source_title}. {self.body}"


def split_sentences(text: str) -> list[str]:
    """Split a section body into sentences; every list item counts as one sentence."""
    sentences: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            sentences.extend(s.strip() for s in _SENTENCE_END.split(" ".join(paragraph)) if s.strip())
            paragraph.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif _BULLET.match(line):
            flush()
            sentences.append(_BULLET.sub("", line).strip())
        else:
            paragraph.append(line.strip())
    flush()
    return sentences


def chunk_markdown(source: str, text: str) -> list[Chunk]:
    """One chunk per "## "/"### " section (and one for text under the "# " title), empty sections skipped."""
    title = Path(source).stem
    chunks: list[Chunk] = []
    path: list[str] = []
    body: list[str] = []

    def flush() -> None:
        sentences = split_sentences("\n".join(body))
        if sentences:
            chunks.append(Chunk(source, title, " › ".join(path), tuple(sentences)))
        body.clear()

    for line in text.splitlines():
        match = _HEADING.match(line)
        if not match:
            body.append(line)
            continue
        flush()
        level, heading = len(match.group(1)), match.group(2)
        if level == 1:
            title, path = heading, []
        else:
            path = [*path[: level - 2], heading]
    flush()
    return chunks


def load_sources(knowledge_dir: Path, names: Sequence[str]) -> dict[str, str]:
    """The text of every approved source; a missing source is an error, not a silently smaller knowledge base."""
    missing = [name for name in names if not (knowledge_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"approved knowledge sources missing in {knowledge_dir}: {', '.join(missing)}")
    return {name: (knowledge_dir / name).read_text(encoding="utf-8") for name in names}


def content_hash(sources: dict[str, str], embedder_name: str) -> str:
    """Changes when a source, the chunker or the embedding model changes."""
    digest = hashlib.sha256(f"chunker={CHUNKER_VERSION}\nembedder={embedder_name}\n".encode())
    for name in sorted(sources):
        digest.update(f"{name}\n{len(sources[name])}\n".encode())
        digest.update(sources[name].encode())
    return digest.hexdigest()
