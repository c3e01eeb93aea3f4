"""CalDAV calendar adapter (Google Calendar, iCloud, Nextcloud, Fastmail, Radicale …) on `caldav` 1.6.

- Busy times come from an event search over the range (server-side time-range query, recurring events
  expanded), not from a free-busy REPORT, which several providers do not implement. Events marked free
  (`TRANSP:TRANSPARENT`) or cancelled do not block; all-day events block their whole day in the booking zone.
- Events are written with a real `TZID` (zoneinfo) plus the matching `VTIMEZONE`: a fixed UTC offset would put
  every event after a DST change one hour off, and free/busy with it.
- Attendance is read from the event, set by the team in their calendar client: a category `attended` /
  `erschienen` or `no_show` / `no-show` / `nicht erschienen` (case-insensitive), or the property
  `X-LEADBOT-ATTENDANCE: attended|no_show`. Attendance recorded through the API is written back the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import caldav
import icalendar
from caldav.lib import error as caldav_error

from leadbot.config import Settings, settings

log = logging.getLogger(__name__)

ATTENDED_CATEGORIES = {"attended", "erschienen"}
NO_SHOW_CATEGORIES = {"no_show", "no-show", "noshow", "nicht erschienen"}
ATTENDANCE_PROPERTY = "X-LEADBOT-ATTENDANCE"
PRODID = "-//leadbot//booking//DE"


class CalendarError(Exception):
    """The calendar server could not be reached or refused the request."""


@dataclass(frozen=True)
class BusyInterval:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class CalendarEvent:
    uid: str
    start: datetime
    end: datetime
    summary: str
    status: str
    attendance: str | None  # "attended" | "no_show" | None


def _aware(value: date | datetime, zone: ZoneInfo) -> datetime:
    """A DTSTART/DTEND value as aware UTC: all-day dates start at midnight and floating times are local."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.min)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(timezone.utc)


def category_names(component: Any) -> list[str]:
    """CATEGORIES may appear several times, each with a comma-separated list."""
    raw = component.get("CATEGORIES")
    groups = raw if isinstance(raw, list) else [raw] if raw is not None else []
    return [str(cat) for group in groups for cat in getattr(group, "cats", [group])]


def attendance_of(component: Any) -> str | None:
    explicit = str(component.get(ATTENDANCE_PROPERTY, "")).strip().lower()
    if explicit in ("attended", "no_show"):
        return explicit
    names = {name.strip().lower() for name in category_names(component)}
    if names & NO_SHOW_CATEGORIES:
        return "no_show"
    if names & ATTENDED_CATEGORIES:
        return "attended"
    return None


class CalDavCalendar:
    def __init__(self, url: str, username: str, password: str, calendar: str, timeout: float = 15.0) -> None:
        self.url = url
        self.calendar_ref = calendar
        self._client = caldav.DAVClient(url=url, username=username or None, password=password or None,
                                        timeout=timeout)
        self._calendar: caldav.Calendar | None = None

    @classmethod
    def from_settings(cls, cfg: Settings | None = None) -> CalDavCalendar:
        cfg = cfg or settings()
        if not cfg.caldav_url:
            raise CalendarError("CALDAV_URL is not configured")
        return cls(cfg.caldav_url, cfg.caldav_username, cfg.caldav_password, cfg.caldav_calendar)

    @staticmethod
    def create_calendar(url: str, username: str, password: str, name: str) -> str:
        """Create a calendar in the user's home and return its URL (setup scripts and tests)."""
        client = caldav.DAVClient(url=url, username=username, password=password)
        created = client.principal().make_calendar(name=name, cal_id=name)
        return str(created.url)

    # --- calendar lookup -----------------------------------------------------------------------------------
    def calendar(self) -> caldav.Calendar:
        """CALDAV_CALENDAR: the calendar's URL, or its display name / last path segment in the user's home
        (empty: the first calendar)."""
        if self._calendar is not None:
            return self._calendar
        ref = self.calendar_ref
        try:
            if ref.startswith(("http://", "https://")):
                self._calendar = self._client.calendar(url=ref)
            else:
                calendars = self._client.principal().calendars()
                for candidate in calendars:
                    segment = str(candidate.url).rstrip("/").rsplit("/", 1)[-1]
                    if not ref or ref in (candidate.name, segment):
                        self._calendar = candidate
                        break
        except (caldav_error.DAVError, OSError) as exc:
            raise CalendarError(f"calendar lookup failed: {type(exc).__name__}: {exc}") from exc
        if self._calendar is None:
            raise CalendarError(f"calendar {ref!r} not found")
        return self._calendar

    # --- reading ---------------------------------------------------------------------------------------------
    def _components(self, start: datetime, end: datetime) -> list[Any]:
        try:
            found = self.calendar().search(start=start, end=end, event=True, expand=True)
        except (caldav_error.DAVError, OSError) as exc:
            raise CalendarError(f"event search failed: {type(exc).__name__}: {exc}") from exc
        components = []
        for item in found:
            components.extend(c for c in item.icalendar_instance.walk("VEVENT"))
        return components

    def _event(self, component: Any, zone: ZoneInfo) -> CalendarEvent:
        start = _aware(component.decoded("DTSTART"), zone)
        if component.get("DTEND") is not None:
            end = _aware(component.decoded("DTEND"), zone)
        elif component.get("DURATION") is not None:
            end = start + component.decoded("DURATION")
        else:  # RFC 5545: an all-day event without end lasts one day, a timed one is a point in time
            end = start + (timedelta(days=1) if not isinstance(component.decoded("DTSTART"), datetime) else timedelta())
        return CalendarEvent(
            uid=str(component.get("UID", "")),
            start=start,
            end=end,
            summary=str(component.get("SUMMARY", "")),
            status=str(component.get("STATUS", "CONFIRMED")).upper(),
            attendance=attendance_of(component),
        )

    def events(self, start: datetime, end: datetime, zone: str = "Europe/Berlin") -> list[CalendarEvent]:
        tz = ZoneInfo(zone)
        return [self._event(component, tz) for component in self._components(start, end)]

    def busy(
        self, start: datetime, end: datetime, zone: str = "Europe/Berlin", exclude_uids: tuple[str, ...] = ()
    ) -> list[BusyInterval]:
        """Busy intervals overlapping [start, end), merged and sorted; `exclude_uids` leaves out events (the
        appointment being moved must not block its own new time)."""
        tz = ZoneInfo(zone)
        intervals = []
        for component in self._components(start, end):
            if str(component.get("UID", "")) in exclude_uids:
                continue
            if str(component.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
                continue
            if str(component.get("STATUS", "")).upper() == "CANCELLED":
                continue
            event = self._event(component, tz)
            if event.end > start and event.start < end:
                intervals.append(BusyInterval(event.start, max(event.end, event.start)))
        intervals.sort(key=lambda i: i.start)
        merged: list[BusyInterval] = []
        for interval in intervals:
            if merged and interval.start <= merged[-1].end:
                merged[-1] = BusyInterval(merged[-1].start, max(merged[-1].end, interval.end))
            else:
                merged.append(interval)
        return merged

    def _resource(self, uid: str) -> Any | None:
        try:
            return self.calendar().event_by_uid(uid)
        except caldav_error.NotFoundError:
            return None
        except (caldav_error.DAVError, OSError) as exc:
            raise CalendarError(f"event lookup failed: {type(exc).__name__}: {exc}") from exc

    def get_event(self, uid: str, zone: str = "Europe/Berlin") -> CalendarEvent | None:
        resource = self._resource(uid)
        if resource is None:
            return None
        return self._event(resource.icalendar_component, ZoneInfo(zone))

    # --- writing ---------------------------------------------------------------------------------------------
    def create_event(
        self, *, uid: str, start: datetime, end: datetime, zone: str, summary: str, description: str,
        location: str | None = None,
    ) -> None:
        tz = ZoneInfo(zone)
        cal = icalendar.Calendar()
        cal.add("prodid", PRODID)
        cal.add("version", "2.0")
        event = icalendar.Event()
        event.add("uid", uid)
        event.add("dtstamp", datetime.now(timezone.utc))
        event.add("dtstart", start.astimezone(tz))
        event.add("dtend", end.astimezone(tz))
        event.add("summary", summary)
        event.add("description", description)
        if location:
            event.add("location", location)
            event.add("url", location)
        event.add("status", "CONFIRMED")
        event.add("transp", "OPAQUE")
        event.add("sequence", 0)
        cal.add_component(event)
        cal.add_missing_timezones()
        try:
            self.calendar().save_event(cal.to_ical().decode(), no_overwrite=True)
        except (caldav_error.DAVError, OSError) as exc:
            raise CalendarError(f"event create failed: {type(exc).__name__}: {exc}") from exc

    def _update(self, uid: str, change: Any) -> bool:
        resource = self._resource(uid)
        if resource is None:
            return False
        component = resource.icalendar_component
        change(component)
        component.pop("DTSTAMP", None)
        component.add("dtstamp", datetime.now(timezone.utc))
        resource.icalendar_instance.add_missing_timezones()
        try:
            resource.save()  # caldav increments SEQUENCE, so clients see the newer version
        except (caldav_error.DAVError, OSError) as exc:
            raise CalendarError(f"event update failed: {type(exc).__name__}: {exc}") from exc
        return True

    def move_event(self, uid: str, start: datetime, end: datetime, zone: str) -> bool:
        """Move the event (same UID, a higher SEQUENCE); False when it no longer exists."""
        tz = ZoneInfo(zone)

        def change(component: Any) -> None:
            for name in ("DTSTART", "DTEND", "DURATION"):
                component.pop(name, None)
            component.add("dtstart", start.astimezone(tz))
            component.add("dtend", end.astimezone(tz))

        return self._update(uid, change)

    def set_attendance(self, uid: str, attendance: str) -> bool:
        """Write API-recorded attendance into the event, so the calendar shows what the KPI counts."""

        def change(component: Any) -> None:
            component.pop(ATTENDANCE_PROPERTY, None)
            component.add(ATTENDANCE_PROPERTY, attendance)
            marks = ATTENDED_CATEGORIES | NO_SHOW_CATEGORIES
            kept = [name for name in category_names(component) if name.strip().lower() not in marks]
            component.pop("CATEGORIES", None)
            component.add("categories", [*kept, attendance])

        return self._update(uid, change)

    def delete_event(self, uid: str) -> bool:
        """Delete the event (frees the slot for everyone); False when it was already gone."""
        resource = self._resource(uid)
        if resource is None:
            return False
        try:
            resource.delete()
        except caldav_error.NotFoundError:
            return False
        except (caldav_error.DAVError, OSError) as exc:
            raise CalendarError(f"event delete failed: {type(exc).__name__}: {exc}") from exc
        return True
