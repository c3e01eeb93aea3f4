"""A local CalDAV server for the embedded default, so booking works without a calendar account.

`scripts/run` starts this process when `CALDAV_URL` is not set: a real Radicale server on loopback with its data
under `var/calendar/`, and a calendar named `leadbot` created on first start. Production points `CALDAV_URL` at
Google Calendar, iCloud, Nextcloud, Fastmail... and does not run it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from leadbot import logs
from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar, CalendarError

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description="local CalDAV server (Radicale) for the embedded default")
    parser.add_argument("--port", type=int, default=5232)
    parser.add_argument("--folder", default="var/calendar")
    parser.add_argument("--user", default="leadbot")
    parser.add_argument("--calendar", default="leadbot")
    args = parser.parse_args()
    logs.configure("calendar")

    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "radicale", "--server-hosts", f"127.0.0.1:{args.port}",
         "--storage-filesystem-folder", str(folder / "collections"), "--auth-type", "none",
         "--rights-type", "owner_only", "--logging-level", "warning"],
    )
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    signal.signal(signal.SIGINT, lambda *_: server.terminate())

    url = f"http://127.0.0.1:{args.port}/"
    for _ in range(100):
        if server.poll() is not None:
            sys.exit(server.returncode)
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    try:
        CalDavCalendar(url, args.user, "", args.calendar).calendar()
    except CalendarError:
        CalDavCalendar.create_calendar(url, args.user, "local", args.calendar)
        logger.info("created the local calendar %r", args.calendar)
    logger.info("local CalDAV server on %s (calendar %r)", url, args.calendar)
    sys.exit(server.wait())


if __name__ == "__main__":
    main()
