"""The dialogue's test stories (tests/stories/test_*.yml) through `rasa test core --e2e` (issue 4 "Done means").

The user text of every story runs through the trained NLU pipeline (DIET, FallbackClassifier and our handover
signals), the policies predict each bot action. An action server on the test database runs alongside on a free port,
as in production (`rasa test` predicts actions from the story's recorded events; it does not execute them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leadbot.rasa_model import RASA_BIN, ROOT, trained_model

pytestmark = pytest.mark.timeout(1800)

STORIES = ROOT / "tests" / "stories"


def test_every_story_passes(action_server: str, tmp_path: Path) -> None:
    model = trained_model()
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(f'action_endpoint:\n  url: "{action_server}"\n')
    out = tmp_path / "results"
    result = subprocess.run(
        [
            str(RASA_BIN), "test", "core",
            "--model", str(model), "--stories", str(STORIES), "--e2e",
            "--endpoints", str(endpoints), "--out", str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    sys.stdout.write(result.stdout[-4000:])
    assert result.returncode == 0, result.stderr[-4000:]
    failed = (out / "failed_test_stories.yml").read_text(encoding="utf-8")
    assert "None of the test stories failed" in failed, failed
