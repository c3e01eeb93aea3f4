"""An injectable clock.

Every piece of code that needs "now" asks `clock.now()`. Tests swap in a `FrozenClock`; the simulator
moves time for every process at once through an offset file (`LEADBOT_CLOCK_OFFSET_FILE`).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Protocol


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class OffsetFileClock:
    """Real time plus an offset in seconds read from a file that the simulator's "skip ahead" writes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1.0
        self._offset = 0.0

    def offset_seconds(self) -> float:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return 0.0
        if mtime != self._mtime:
            with open(self.path, encoding="utf-8") as handle:
                raw = handle.read().strip()
            self._offset = float(raw or 0)
            self._mtime = mtime
        return self._offset

    def advance(self, seconds: float) -> float:
        offset = self.offset_seconds() + seconds
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(str(offset))
        os.replace(tmp, self.path)
        return offset

    def now(self) -> datetime:
        return utcnow() + timedelta(seconds=self.offset_seconds())


class FrozenClock:
    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment


_clock: Clock | None = None


def get_clock() -> Clock:
    global _clock
    if _clock is None:
        path = os.environ.get("LEADBOT_CLOCK_OFFSET_FILE", "").strip()
        _clock = OffsetFileClock(path) if path else SystemClock()
    return _clock


def set_clock(clock: Clock | None) -> None:
    """Install a clock for this process (None restores the configured default)."""
    global _clock
    _clock = clock


def now() -> datetime:
    return get_clock().now()
