"""Evaluate the knowledge assistant on the labelled German question set.

    python bench/knowledge_eval.py               # top-1 source accuracy, escalation precision/recall, p95 latency
    python bench/knowledge_eval.py --calibrate   # also compute the confidence threshold to store in settings.py
    python bench/knowledge_eval.py --sweep-alpha # compare dense/lexical weights

Uses the settings from the environment (KNOWLEDGE_EMBEDDING_MODEL, KNOWLEDGE_MIN_SCORE, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leadbot.knowledge import KnowledgeAssistant, KnowledgeSettings, make_embedder  # noqa: E402
from leadbot.knowledge.evaluation import (  # noqa: E402
    EVAL_SET,
    calibrate,
    load_examples,
    report,
    run,
    with_threshold,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-set", type=Path, default=EVAL_SET)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--sweep-alpha", action="store_true")
    parser.add_argument("--errors", action="store_true", help="list the questions handled wrongly")
    args = parser.parse_args()
    examples = load_examples(args.eval_set)
    settings = KnowledgeSettings.from_env()
    embedder = make_embedder(settings.embedding_model)
    print(f"embedder: {embedder.name}, dense weight {settings.dense_weight}, threshold {settings.min_score}")

    if args.sweep_alpha:
        for tenth in range(11):
            weighted = dataclasses.replace(settings, dense_weight=tenth / 10)
            outcomes = run(KnowledgeAssistant.from_settings(weighted, embedder), examples)
            threshold, cost = calibrate(outcomes)
            print(f"dense weight {tenth / 10:.1f}: top-1 {report(outcomes).top1_accuracy:.3f}, "
                  f"best threshold {threshold:.4f} with cost {cost:.0f}")

    assistant = KnowledgeAssistant.from_settings(settings, embedder, progress=True)
    outcomes = run(assistant, examples)
    print("\n".join(report(outcomes).lines()))
    if args.calibrate:
        threshold, cost = calibrate(outcomes)
        print(f"calibrated threshold: {threshold:.4f} (cost {cost:.0f}); store it as CALIBRATED_MIN_SCORE")
        # Honesty check: calibrate on one half of the set and measure on the other half.
        for fold in (0, 1):
            half_threshold, _ = calibrate(outcomes[fold::2])
            held_out = report(with_threshold(outcomes[1 - fold :: 2], half_threshold))
            print(f"held-out half {1 - fold} with threshold {half_threshold:.4f} from half {fold}: "
                  f"answered right {held_out.answer_accuracy:.3f}, escalation precision "
                  f"{held_out.escalation_precision:.3f}, recall {held_out.escalation_recall:.3f}")
    if args.errors:
        for o in outcomes:
            expected = o.example.sources
            if (o.answered_source not in expected) if expected else (o.answered_source is not None):
                print(f"  [{o.example.kind}] {o.example.question!r}: expected {o.example.sources or 'no answer'}, "
                      f"answered {o.answered_source}, top {o.top_source} ({o.score:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
