"""The scheduler process: `python -m scheduler`.

An APScheduler interval job (every `SCHEDULER_POLL_SECONDS`) fires due `tasks_scheduled` rows through Rasa's
trigger_intent API; a thread delivers the CRM outbox (`CRM_OUTBOX_POLL_SECONDS`); an interval job reads the team's
calendar edits back (`CALENDAR_SYNC_SECONDS`); `/health` and `/metrics` are served on `SCHEDULER_PORT`.
Run as many replicas as you like on PostgreSQL (SKIP LOCKED claims); on the SQLite embedded default run one.
SIGTERM/SIGINT: stop claiming, finish the triggers in flight, give the rest of the claimed batch back, exit.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from leadbot import logs
from leadbot.adapters.crm import outbox_worker
from leadbot.config import settings
from leadbot.db.session import get_engine
from leadbot.status_server import start_status_server
from scheduler.firing import Firer
from scheduler.rasa_client import HttpRasaClient

log = logging.getLogger("scheduler")


def database_health(engine: sa.engine.Engine) -> dict[str, Any]:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return {"status": "ok"}
    except Exception:  # any DB failure means "not healthy", with the reason in our log only
        log.exception("health check failed")
        return {"status": "db_unavailable"}


def _calendar_sync() -> None:
    from leadbot.services.booking import run_calendar_sync

    try:
        run_calendar_sync()
    except Exception:  # the calendar may be briefly away; the next run retries
        log.exception("calendar read-back failed")


def main() -> None:
    logs.configure("scheduler")
    # APScheduler logs every run of the 1 s job at INFO; our own log lines say what the runs did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    cfg = settings()
    engine = get_engine()
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    rasa = HttpRasaClient.from_settings(cfg)
    firer = Firer(engine, rasa, worker_id, cfg)

    server = start_status_server(cfg.scheduler_port, lambda: database_health(engine), "scheduler")

    jobs = BackgroundScheduler(timezone="UTC")
    # One run at a time per process; a slow run is not queued up behind itself (coalesce).
    jobs.add_job(firer.run_once, "interval", seconds=cfg.scheduler_poll_seconds, id="fire_due_tasks",
                 max_instances=1, coalesce=True)
    jobs.add_job(_calendar_sync, "interval", seconds=cfg.calendar_sync_seconds, id="calendar_sync",
                 max_instances=1, coalesce=True)
    stop = threading.Event()
    crm = threading.Thread(target=outbox_worker.run_forever, args=(stop,), name="crm-outbox", daemon=True)

    def _shutdown(signum: int, _frame: Any) -> None:
        log.info("signal %s: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    jobs.start()
    crm.start()
    log.info("scheduler %s started (poll %.1fs, port %s)", worker_id, cfg.scheduler_poll_seconds, cfg.scheduler_port)
    stop.wait()
    firer.stop()
    jobs.shutdown(wait=True)
    crm.join(timeout=30)
    server.shutdown()
    rasa.close()
    log.info("scheduler stopped")


if __name__ == "__main__":
    main()
