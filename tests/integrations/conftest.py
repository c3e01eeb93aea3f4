"""Fixtures for the CRM and calendar integration tests: a real Radicale CalDAV server, a HubSpot-faithful server.

Radicale runs as its own process (`python -m radicale`) on a free loopback port with a temporary storage folder
and a plain htpasswd user, exactly as a small self-hosted CalDAV deployment would; every test gets a fresh
calendar on it. The HubSpot fake (`tests/fakes/hubspot_fake.py`) runs in a thread of the test process so tests
can script outages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar
from leadbot.adapters.crm.hubspot import HubSpotCrm
from tests.fakes.hubspot_fake import TOKEN, HubSpotFake

CALDAV_USER = "team"
CALDAV_PASSWORD = "team-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def radicale_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("radicale")
    users = root / "users"
    users.write_text(f"{CALDAV_USER}:{CALDAV_PASSWORD}\n", encoding="utf-8")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "radicale",
            "--server-hosts", f"127.0.0.1:{port}",
            "--storage-filesystem-folder", str(root / "collections"),
            "--auth-type", "htpasswd",
            "--auth-htpasswd-filename", str(users),
            "--auth-htpasswd-encryption", "plain",
            "--rights-type", "owner_only",
            "--logging-level", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the server to listen; fail with its stderr if it died
            if process.poll() is not None:
                raise RuntimeError(f"radicale exited: {process.stderr.read().decode() if process.stderr else ''}")
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("radicale did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def calendar(radicale_url: str) -> CalDavCalendar:
    """A fresh, empty calendar on the Radicale server, addressed by its URL as CALDAV_CALENDAR would be."""
    name = f"leadbot-{uuid.uuid4().hex[:8]}"
    created = CalDavCalendar.create_calendar(radicale_url, CALDAV_USER, CALDAV_PASSWORD, name)
    return CalDavCalendar(radicale_url, CALDAV_USER, CALDAV_PASSWORD, created)


@pytest.fixture
def hubspot() -> Iterator[HubSpotFake]:
    fake = HubSpotFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def hubspot_port(hubspot: HubSpotFake) -> HubSpotCrm:
    return HubSpotCrm(hubspot.url, TOKEN, timeout=5)


@pytest.fixture
def make_session(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, future=True, expire_on_commit=False)


@pytest.fixture
def db(make_session: sessionmaker) -> Iterator[Session]:
    with make_session() as session:
        yield session
