"""Floors for the German NLU, measured by 5-fold cross-validation (bench/nlu_eval.py)."""

from __future__ import annotations

import sys

import pytest

from bench.nlu_eval import format_report, run

pytestmark = pytest.mark.timeout(3600)

MIN_ACCURACY = 0.85
MIN_INTENT_F1 = 0.70
# Registration-only intents of trigger_intent (two synthetic examples each) and the fallback are not language.
NOT_LANGUAGE = ("EXTERNAL_", "nlu_fallback")


def test_intent_accuracy_and_per_intent_f1_floors(tmp_path) -> None:
    report = run(folds=5, out=tmp_path)
    sys.stdout.write(format_report(report) + "\n")
    assert report.accuracy >= MIN_ACCURACY
    weak = {
        name: f1
        for name, (f1, support) in report.per_intent.items()
        if not name.startswith(NOT_LANGUAGE) and support >= 10 and f1 < MIN_INTENT_F1
    }
    assert not weak, f"intents below F1 {MIN_INTENT_F1}: {weak}"
