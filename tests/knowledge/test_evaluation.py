"""Quality floors on the labelled German question set with the default embedder and the calibrated threshold."""

import pytest

from leadbot.knowledge.evaluation import Example, Outcome, calibrate, load_examples, report, run
from leadbot.knowledge.settings import CALIBRATED_MIN_SCORE


@pytest.fixture(scope="module")
def outcomes(assistant):
    return run(assistant, load_examples())


def test_eval_set_covers_every_source_kind_and_out_of_scope():
    examples = load_examples()
    assert len(examples) >= 60
    for source in ("pricing.md", "offers.md", "faq.md", "legal.md"):
        assert sum(source in e.sources for e in examples) >= 10, source
    assert sum(not e.sources for e in examples) >= 15
    assert {e.kind for e in examples} >= {"paraphrase", "colloquial", "typo", "out_of_scope", "not_covered"}


def test_quality_floors(outcomes):
    result = report(outcomes)
    print("\n".join(result.lines()))
    assert result.top1_accuracy >= 0.93
    assert result.answer_accuracy >= 0.90
    assert result.escalation_precision >= 0.85
    assert result.escalation_recall >= 0.85
    assert result.p95_latency_ms < 250


def test_stored_threshold_is_the_calibrated_one(outcomes):
    threshold, _ = calibrate(outcomes)
    assert threshold == pytest.approx(CALIBRATED_MIN_SCORE, abs=0.01)


def test_calibration_prefers_handover_over_a_guess():
    def outcome(sources, top, score):
        return Outcome(Example("q", sources, "paraphrase"), top, score, None, 0.0)

    outcomes = [
        outcome(("faq.md",), "faq.md", 0.9),
        outcome(("faq.md",), "faq.md", 0.8),
        outcome((), "faq.md", 0.7),  # out of scope, must be below the threshold
        outcome(("faq.md",), "legal.md", 0.6),  # wrong source: better not answered
    ]
    threshold, cost = calibrate(outcomes)
    assert 0.7 < threshold < 0.8 and cost == 1  # the wrongly retrieved question is handed over, at cost 1
