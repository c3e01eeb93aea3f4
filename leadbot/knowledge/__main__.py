"""CLI: `python -m leadbot.knowledge build` (re)builds the index; `ask "Frage"` answers one question."""

from __future__ import annotations

import argparse
import logging

from leadbot.knowledge.assistant import KnowledgeAssistant
from leadbot.knowledge.embedders import make_embedder
from leadbot.knowledge.index import KnowledgeIndex
from leadbot.knowledge.settings import APPROVED_SOURCES, KnowledgeSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leadbot.knowledge")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the index (skipped when sources and model are unchanged)")
    build.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    ask = commands.add_parser("ask", help="answer a question from the command line")
    ask.add_argument("question")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = KnowledgeSettings.from_env()
    if args.command == "build":
        index = KnowledgeIndex.load_or_build(
            settings.knowledge_dir, APPROVED_SOURCES, settings.index_dir, make_embedder(settings.embedding_model),
            settings.dense_weight, progress=True, force=args.force,
        )
        print(f"{len(index.chunks)} sections indexed in {settings.index_dir} ({index.content_hash[:12]})")
        return 0
    answer = KnowledgeAssistant.from_settings(settings, progress=True).answer(args.question)
    print(answer.text)
    print(f"[source={answer.source} score={answer.score:.3f} escalate={answer.escalate} reason={answer.reason}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
