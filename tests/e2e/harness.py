"""Runs the whole system exactly as the README's run command does (`scripts/run`), on free ports.

Used by end-to-end tests: `with LeadbotSystem(tmp_path) as system: ...` starts Rasa, the action server, the
scheduler, the sender and the ops API through honcho, waits until every health endpoint answers, and stops them
with SIGTERM (graceful shutdown) at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LeadbotSystem:
    def __init__(self, workdir: Path, *, database_url: str | None = None, tracker_url: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in ("rasa", "actions", "api", "scheduler", "sender", "calendar")}
        self.api_key = "e2e-ops-key"
        self.rasa_token = "e2e-rasa-token"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url or f"sqlite:///{workdir}/leadbot.db",
            "RASA_TRACKER_URL": tracker_url or f"sqlite:///{workdir}/rasa_tracker.db",
            "RASA_LOCK_URL": "",
            "OPS_API_KEY": self.api_key,
            "RASA_API_TOKEN": self.rasa_token,
            "RASA_PORT": str(self.ports["rasa"]),
            "ACTION_PORT": str(self.ports["actions"]),
            "OPS_API_PORT": str(self.ports["api"]),
            "SCHEDULER_PORT": str(self.ports["scheduler"]),
            "SENDER_PORT": str(self.ports["sender"]),
            "LOCAL_CALDAV_PORT": str(self.ports["calendar"]),
            "CALDAV_URL": "",
            "LEADBOT_RUN_DIR": str(workdir),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.ports['rasa']}",
            "RASA_URL": f"http://127.0.0.1:{self.ports['rasa']}",
            "ACTION_ENDPOINT_URL": f"http://127.0.0.1:{self.ports['actions']}/webhook",
            "LEADBOT_CLOCK_OFFSET_FILE": str(workdir / "clock_offset"),
            "TWILIO_ACCOUNT_SID": "",
            "TWILIO_AUTH_TOKEN": "",
            **(env or {}),
        }
        self.log_path = workdir / "system.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, process: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[process]}{path}"

    @property
    def health_urls(self) -> dict[str, str]:
        return {
            "rasa": self.url("rasa", "/webhooks/whatsapp/health"),
            "actions": self.url("actions", "/health"),
            "api": self.url("api", "/health"),
            "scheduler": self.url("scheduler", "/health"),
            "sender": self.url("sender", "/health"),
        }

    def start(self) -> LeadbotSystem:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(ROOT / "scripts/run")], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        pending = dict(self.health_urls)
        while pending and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"scripts/run exited with {self.process.returncode}:\n{self.log_tail()}")
            for name, url in list(pending.items()):
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(1)
        if pending:
            self.stop()
            raise RuntimeError(f"not healthy after {START_TIMEOUT_SECONDS}s: {sorted(pending)}\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to the whole process group (what Ctrl-C or a supervisor does); returns honcho's exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> LeadbotSystem:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
