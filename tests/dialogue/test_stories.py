"""The dialogue's test stories (tests/stories/test_*.yml) through `rasa test core --e2e` (issue 4 "Done means").

The user text of every story runs through the trained NLU pipeline (DIET, FallbackClassifier and our handover
signals), the policies predict each bot action. An action server on the test database runs alongside on a free port,
as in production (`rasa test` predicts actions from the story's recorded events; it does not execute them).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dialogue.rasa_model import RASA_BIN, ROOT, trained_model

pytestmark = pytest.mark.timeout(1800)

ACTION_PYTHON = ROOT / ".venv" / "bin" / "python"
STORIES = ROOT / "tests" / "stories"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def action_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("action-server") / "actions.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(ACTION_PYTHON), "-m", "rasa_sdk", "--actions", "actions", "-p", str(port)],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"action server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"action server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"{url}/webhook"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


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
