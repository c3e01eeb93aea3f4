"""Floors for the German NLU, measured by 5-fold cross-validation (bench/nlu_eval.py)."""

from __future__ import annotations

import sys

import pytest

from bench.nlu_eval import format_report, run

pytestmark = pytest.mark.timeout(3600)

# Measured 2026-11-25 (5 folds, all of data/nlu incl. booking): accuracy 0.817, own intents F1 0.78-0.93.
MIN_ACCURACY = 0.78
MIN_INTENT_F1 = 0.72
# The intents of the qualification, handover, knowledge and common features (the booking feature owns its own).
OWN_INTENTS = (
    "affirm", "deny", "later", "greet", "goodbye", "thank", "bot_challenge", "inform_ads", "inform_volume",
    "ask_question", "request_human", "complain", "opt_out",
)


def test_intent_accuracy_and_per_intent_f1_floors(tmp_path) -> None:
    report = run(folds=5, out=tmp_path)
    sys.stdout.write(format_report(report) + "\n")
    assert report.accuracy >= MIN_ACCURACY
    assert set(OWN_INTENTS) <= set(report.per_intent)
    weak = {name: report.per_intent[name][0] for name in OWN_INTENTS if report.per_intent[name][0] < MIN_INTENT_F1}
    assert not weak, f"intents below F1 {MIN_INTENT_F1}: {weak}"
