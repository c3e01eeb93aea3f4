"""Evaluation and threshold calibration on the labelled German question set (used by bench/knowledge_eval.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leadbot.knowledge.assistant import KnowledgeAssistant
from leadbot.knowledge.settings import REPO_ROOT

EVAL_SET = REPO_ROOT / "tests" / "knowledge" / "eval_set.jsonl"
# Calibration costs: answering when it should not (out of scope or the wrong source) is a guess, the failure the
# seed forbids; a handover that was not needed only costs the team a little time.
WRONG_ANSWER_COST = 2.0
NEEDLESS_HANDOVER_COST = 1.0


@dataclass(frozen=True)
class Example:
    question: str
    sources: tuple[str, ...]  # acceptable sources (some facts are in two files); empty: must not answer
    kind: str


@dataclass(frozen=True)
class Outcome:
    example: Example
    top_source: str | None  # best retrieved source before the threshold (None when retrieval was skipped)
    score: float  # best hybrid score (0.0 when retrieval was skipped)
    answered_source: str | None  # source of the answer, None when escalated or declined
    seconds: float


@dataclass(frozen=True)
class Report:
    top1_accuracy: float  # in-scope questions whose best retrieved section comes from the right file
    answer_accuracy: float  # in-scope questions answered, from the right file
    escalation_precision: float  # of the questions not answered, the share that should not have been
    escalation_recall: float  # of the questions that should not be answered, the share not answered
    p95_latency_ms: float
    total: int
    in_scope: int

    def lines(self) -> list[str]:
        return [
            f"questions: {self.total} ({self.in_scope} in scope, {self.total - self.in_scope} to escalate/decline)",
            f"top-1 source accuracy: {self.top1_accuracy:.3f}",
            f"answered with the right source: {self.answer_accuracy:.3f}",
            f"escalation precision: {self.escalation_precision:.3f}",
            f"escalation recall: {self.escalation_recall:.3f}",
            f"p95 latency: {self.p95_latency_ms:.1f} ms",
        ]


def load_examples(path: Path = EVAL_SET) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(row["question"], tuple(row["sources"]), row["kind"]) for row in rows]


def run(assistant: KnowledgeAssistant, examples: list[Example]) -> list[Outcome]:
    outcomes = []
    for example in examples:
        started = time.perf_counter()
        answer = assistant.answer(example.question)
        seconds = time.perf_counter() - started
        retrieved = answer.reason != "out_of_scope"  # out-of-scope questions are declined before retrieval
        top = assistant.retrieve(example.question, k=1)[0] if retrieved else None
        outcomes.append(Outcome(example, top.chunk.source if top else None, top.score if top else 0.0,
                                answer.source, seconds))
    return outcomes


def report(outcomes: list[Outcome]) -> Report:
    in_scope = [o for o in outcomes if o.example.sources]
    should_escalate = {id(o) for o in outcomes if not o.example.sources}
    escalated = {id(o) for o in outcomes if o.answered_source is None}
    both = len(should_escalate & escalated)
    return Report(
        top1_accuracy=sum(o.top_source in o.example.sources for o in in_scope) / max(len(in_scope), 1),
        answer_accuracy=sum(o.answered_source in o.example.sources for o in in_scope) / max(len(in_scope), 1),
        escalation_precision=both / len(escalated) if escalated else 1.0,
        escalation_recall=both / len(should_escalate) if should_escalate else 1.0,
        p95_latency_ms=float(np.percentile([o.seconds for o in outcomes], 95) * 1000),
        total=len(outcomes),
        in_scope=len(in_scope),
    )


def with_threshold(outcomes: list[Outcome], threshold: float) -> list[Outcome]:
    """The outcomes as they would be with another threshold (what is answered changes, retrieval does not)."""
    return [
        dataclasses.replace(o, answered_source=o.top_source if o.top_source and o.score >= threshold else None)
        for o in outcomes
    ]


def threshold_cost(outcomes: list[Outcome], threshold: float) -> float:
    cost = 0.0
    for o in outcomes:
        if o.top_source is None:  # declined before retrieval; the threshold does not matter
            continue
        answers = o.score >= threshold
        if answers and o.top_source not in o.example.sources:
            cost += WRONG_ANSWER_COST
        elif not answers and o.example.sources:
            cost += NEEDLESS_HANDOVER_COST
    return cost


def calibrate(outcomes: list[Outcome]) -> tuple[float, float]:
    """The threshold with the lowest cost (middle of the best interval between observed scores) and that cost."""
    scores = sorted({o.score for o in outcomes if o.top_source is not None})
    candidates = [scores[0] - 1e-3] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)]
    candidates.append(scores[-1] + 1e-3)
    costs = [threshold_cost(outcomes, t) for t in candidates]
    best = min(costs)
    tied = [t for t, c in zip(candidates, costs, strict=True) if c == best]
    return float(np.median(tied)), best
