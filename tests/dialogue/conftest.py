"""Processes for the dialogue tests: the action server on the test database (with a Radicale team calendar, so the
qualified path ends in real slot proposals), and a Rasa server with our model."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar
from leadbot.rasa_model import RASA_BIN, ROOT, trained_model
from tests.integrations.conftest import CALDAV_PASSWORD, CALDAV_USER, radicale_url  # noqa: F401 (fixture)

ACTION_PYTHON = ROOT / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(process: subprocess.Popen, url: str, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def action_server(database_url: str, radicale_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    """`python -m rasa_sdk` on a free port with DATABASE_URL = the test database; yields the webhook URL."""
    calendar = CalDavCalendar.create_calendar(radicale_url, CALDAV_USER, CALDAV_PASSWORD, "leadbot-dialogue")
    caldav_env = {
        "CALDAV_URL": radicale_url,
        "CALDAV_USERNAME": CALDAV_USER,
        "CALDAV_PASSWORD": CALDAV_PASSWORD,
        "CALDAV_CALENDAR": calendar,
    }
    port = free_port()
    log = tmp_path_factory.mktemp("action-server") / "actions.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [str(ACTION_PYTHON), "-m", "rasa_sdk", "--actions", "actions", "-p", str(port)],
            cwd=ROOT,
            env={**os.environ, **caldav_env, "DATABASE_URL": database_url},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, f"{url}/health", log, "action server", 120)
        yield f"{url}/webhook"
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def rasa_server(action_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`rasa run --enable-api` with the REST channel and an in-memory tracker; yields the base URL."""
    model = trained_model()
    workdir = tmp_path_factory.mktemp("rasa-server")
    endpoints = workdir / "endpoints.yml"
    endpoints.write_text(f'action_endpoint:\n  url: "{action_server}"\n')
    credentials = workdir / "credentials.yml"
    credentials.write_text("rest:\n")
    port = free_port()
    log = workdir / "rasa.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [
                str(RASA_BIN), "run", "--enable-api", "-m", str(model), "-p", str(port), "-i", "127.0.0.1",
                "--endpoints", str(endpoints), "--credentials", str(credentials),
            ],
            cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false"},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, f"{url}/status", log, "rasa server", 300)
        yield url
    finally:
        _stop(process)
