"""`python -m scheduler` as a process: fires a due task through the HTTP trigger, serves health and metrics, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from leadbot.clock import now
from tests.scheduler.helpers import TOKEN, bulk_due_tasks

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, seconds: float = 60.0) -> bool:
    """Poll until `condition()` holds; the limit only bounds a hang, it asserts nothing about speed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_scheduler_process_fires_serves_health_and_stops_on_sigterm(engine, database_url, fake_rasa, scheduler_env):
    [task_id] = bulk_due_tasks(engine, 1, now() - timedelta(seconds=1))
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "RASA_URL": fake_rasa.url, "RASA_API_TOKEN": TOKEN,
           "SCHEDULER_PORT": str(port), "SCHEDULER_POLL_SECONDS": "0.2", "LEADBOT_CLOCK_OFFSET_FILE": ""}
    process = subprocess.Popen([sys.executable, "-m", "scheduler"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: len(fake_rasa.calls) == 1)
        call = fake_rasa.calls[0]
        assert (call.intent, call.entities, call.output_channel) == (
            "EXTERNAL_nudge_30m", {"task_id": str(task_id)}, "whatsapp"
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.HTTPError:
                return False

        assert _wait_for(healthy)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'leadbot_tasks_fired_total{outcome="fired",task_type="nudge_30m"} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = process.stdout.read().decode()
    assert "+4915100000000" not in log  # phone numbers never appear in logs
