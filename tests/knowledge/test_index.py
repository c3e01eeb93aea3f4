import dataclasses
import json

from leadbot.knowledge import KnowledgeAssistant
from leadbot.knowledge.index import KnowledgeIndex
from leadbot.knowledge.settings import APPROVED_SOURCES


class CountingEmbedder:
    """Wraps the real embedder and counts passage embeddings, i.e. index builds."""

    def __init__(self, inner):
        self._inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.passage_calls = 0

    def embed_queries(self, texts):
        return self._inner.embed_queries(texts)

    def embed_passages(self, texts):
        self.passage_calls += 1
        return self._inner.embed_passages(texts)


def test_index_is_persisted_with_the_content_hash_and_reused(tmp_path, settings, embedder):
    counting = CountingEmbedder(embedder)
    first = KnowledgeIndex.load_or_build(settings.knowledge_dir, APPROVED_SOURCES, tmp_path, counting, 0.8)
    builds = counting.passage_calls
    assert builds > 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["content_hash"] == first.content_hash and meta["embedder"] == embedder.name
    assert {p.name for p in tmp_path.iterdir()} == {"meta.json", "chunks.json", "chunks.faiss", "sentences.npy"}

    second = KnowledgeIndex.load_or_build(settings.knowledge_dir, APPROVED_SOURCES, tmp_path, counting, 0.8)
    assert counting.passage_calls == builds, "an unchanged index must be loaded, not rebuilt"
    assert second.chunks == first.chunks


def test_changed_source_rebuilds_the_index_and_new_content_is_answered(tmp_path, knowledge_copy, settings, embedder):
    local = dataclasses.replace(settings, knowledge_dir=knowledge_copy, index_dir=tmp_path / "index")
    before = KnowledgeAssistant.from_settings(local, embedder)
    assert before.answer("Habt ihr ein Büro in Wien?").escalate

    with (knowledge_copy / "faq.md").open("a", encoding="utf-8") as faq:
        faq.write("\n## Habt ihr ein Büro in Österreich?\n\nJa, unser Büro in Wien ist im 7. Bezirk.\n")
    after = KnowledgeAssistant.from_settings(local, embedder)
    answer = after.answer("Habt ihr ein Büro in Wien?")
    assert not answer.escalate and answer.source == "faq.md"
    assert "Wien" in answer.text and "(Quelle: FAQ – Habt ihr ein Büro in Österreich?)" in answer.text


def test_files_outside_the_approved_list_are_ignored(tmp_path, knowledge_copy, settings, embedder):
    (knowledge_copy / "internal.md").write_text("# Intern\n\n## Marge\n\nUnsere Marge ist 80 %.\n", encoding="utf-8")
    index = KnowledgeIndex.load_or_build(knowledge_copy, APPROVED_SOURCES, tmp_path, embedder, 0.8)
    assert {c.source for c in index.chunks} == set(APPROVED_SOURCES)


def test_long_sections_are_shortened_to_the_relevant_sentences(tmp_path, knowledge_copy, settings, embedder):
    long_section = (
        "\n## Onboarding-Workshop\n\nZum Start gibt es einen Onboarding-Workshop für dein Team. "
        "Der Workshop findet online statt und wird aufgezeichnet. Wir zeigen dort das Dashboard und die Übergabe. "
        "Danach bekommst du eine Checkliste für die ersten Wochen. Fragen kannst du jederzeit im Chat stellen. "
        "Der Workshop dauert 90 Minuten und ist im Paketpreis enthalten. Die Aufzeichnung bleibt 6 Monate abrufbar.\n"
    )
    with (knowledge_copy / "offers.md").open("a", encoding="utf-8") as offers:
        offers.write(long_section)
    local = dataclasses.replace(settings, knowledge_dir=knowledge_copy, index_dir=tmp_path)
    answer = KnowledgeAssistant.from_settings(local, embedder).answer("Wie lange dauert der Onboarding-Workshop?")
    assert answer.source == "offers.md"
    assert answer.text.startswith("Zum Start gibt es einen Onboarding-Workshop")
    assert "90 Minuten" in answer.text and len(answer.text) < len(long_section)
