"""NLU evaluation of the German intents: k-fold cross-validation with `rasa test nlu` (issue 4 "Done means").

Usage: `.venv/bin/python bench/nlu_eval.py [--folds 5] [--seed 4711] [--out results/nlu_eval]`
Prints intent accuracy, macro/weighted F1 and the F1 of every intent; tests/dialogue/test_nlu_eval.py asserts floors.

Cross-validation runs the full pipeline of config.yml on each held-out fold, including `leadbot.rasa_nlu`
(opt-out/handover keywords, sentiment threshold, unknown-word fallback), so the numbers are what leads will get.
The `EXTERNAL_*` intents only exist to register trigger_intent names and are left out of the per-intent floors.

Rasa draws the folds with an unseeded `StratifiedKFold(shuffle=True)`, i.e. from numpy's global generator, so two
runs split differently and a small intent's F1 moved by 0.07 between runs. The eval seeds that generator before Rasa
starts: the same seed gives the same folds (DIET itself trains with config.yml's `random_seed`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RASA_PYTHON = ROOT / ".venv-rasa" / "bin" / "python"
DEFAULT_SEED = 4711
# Seeds numpy's global generator (which Rasa's fold split draws from), then runs the `rasa` CLI with the given args.
SEEDED_RASA = (
    "import sys, numpy; numpy.random.seed(int(sys.argv[1])); del sys.argv[1]; from rasa.__main__ import main; main()"
)


@dataclass(frozen=True)
class NluReport:
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_intent: dict[str, tuple[float, int]]  # intent -> (f1, support)


def run(folds: int = 5, out: Path | None = None, seed: int = DEFAULT_SEED) -> NluReport:
    out_dir = out or Path(tempfile.mkdtemp(prefix="nlu-eval-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            str(RASA_PYTHON), "-c", SEEDED_RASA, str(seed), "test", "nlu",
            "--nlu", "data/nlu", "--config", "config.yml", "--domain", "domain",
            "--cross-validation", "--folds", str(folds), "--out", str(out_dir),
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rasa test nlu failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    report = json.loads((out_dir / "intent_report.json").read_text(encoding="utf-8"))
    per_intent = {
        name: (float(values["f1-score"]), int(values["support"]))
        for name, values in report.items()
        if isinstance(values, dict) and "f1-score" in values and name not in ("macro avg", "weighted avg", "micro avg")
    }
    return NluReport(
        accuracy=float(report["accuracy"]),
        macro_f1=float(report["macro avg"]["f1-score"]),
        weighted_f1=float(report["weighted avg"]["f1-score"]),
        per_intent=per_intent,
    )


def format_report(report: NluReport) -> str:
    lines = [
        f"intent accuracy  {report.accuracy:.3f}",
        f"macro F1         {report.macro_f1:.3f}",
        f"weighted F1      {report.weighted_f1:.3f}",
        "",
        f"{'intent':<28}{'F1':>7}{'support':>9}",
    ]
    for name, (f1, support) in sorted(report.per_intent.items(), key=lambda item: item[1][0]):
        lines.append(f"{name:<28}{f1:>7.3f}{support:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the fold split")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    print(format_report(run(args.folds, args.out, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
