"""The ops dashboard (issue 8 point 3): `GET /dashboard` and its JSON under `/dashboard/api/...`.

The page itself is static HTML/CSS/vanilla JS (no CDN: the machine may have no internet). It asks for the API key
once, keeps it in sessionStorage and loads everything through API-key-protected JSON: KPI tiles and trends from
`leadbot.services.kpis`, the funnel defined here, and the ops API's own handover queue (`GET /handovers`,
`POST /conversations/{id}/hand-back`) and dead letters (`GET /dead-letters`, `POST /dead-letters/{id}/replay`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from leadbot.api.deps import db_session, require_api_key
from leadbot.clock import now
from leadbot.config import settings
from leadbot.db.models import Appointment, AuditEvent, Conversation, Message, QualificationAnswer
from leadbot.services import kpis
from leadbot.services.kpis import FIRST_CONTACT_TEMPLATE

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
TREND_DAYS_MAX = 92

router = APIRouter(tags=["dashboard"], include_in_schema=False)
api = APIRouter(prefix="/dashboard/api", tags=["dashboard"], dependencies=[Depends(require_api_key)])


def static_file(name: str) -> FileResponse:
    """One of our own page files. Names come from fixed routes, never from the URL, so no path can escape."""
    path = STATIC_DIR / name
    # no-cache: a redeploy must never leave an old script running against a new API.
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@router.get("/dashboard")
def dashboard_page() -> FileResponse:
    return static_file("dashboard.html")


@router.get("/dashboard/dashboard.js")
def dashboard_script() -> FileResponse:
    return static_file("dashboard.js")


@router.get("/dashboard/dashboard.css")
def dashboard_style() -> FileResponse:
    return static_file("dashboard.css")


@router.get("/ui/common.js")
def common_script() -> FileResponse:
    return static_file("common.js")


@router.get("/ui/common.css")
def common_style() -> FileResponse:
    return static_file("common.css")


def _zone(tz: str | None) -> str:
    name = tz or settings().team_timezone
    try:
        ZoneInfo(name)
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise HTTPException(422, f"unknown time zone: {name}") from exc
    return name


def _today(tz: str) -> date:
    return now().astimezone(ZoneInfo(tz)).date()


# --- Funnel -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Funnel:
    """A cohort funnel: the contacts who opted in during [start, end), and how far each of them got (ever).

    Each stage uses the KPI definitions of `leadbot.services.kpis` and is a subset of the stage before it:
    - opted_in: contacts with a `consent_granted` audit event in the period (the legal record of the opt-in).
    - replied: ... with an inbound message at or after their first contact (`lead_welcome_v1` handed to Twilio),
      the reply-rate numerator.
    - qualified: ... with a conversation decided `qualified = true`.
    - booked: ... with at least one appointment ever booked (any status, as in the booking rate).
    - attended: ... with an appointment recorded as `attended`.
    """

    start: datetime
    end: datetime
    opted_in: int
    replied: int
    qualified: int
    booked: int
    attended: int

    def as_dict(self) -> dict:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return data


def funnel(session: Session, start: datetime, end: datetime) -> Funnel:
    opted_in = set(
        session.execute(
            select(AuditEvent.contact_id).where(
                AuditEvent.event_type == "consent_granted",
                AuditEvent.created_at >= start,
                AuditEvent.created_at < end,
                AuditEvent.contact_id.is_not(None),
            )
        ).scalars()
    )
    if not opted_in:
        return Funnel(start, end, 0, 0, 0, 0, 0)
    in_cohort = Conversation.contact_id.in_(opted_in)

    first_contact = (
        select(Message.conversation_id, func.min(Message.sent_at).label("sent_at"))
        .where(Message.template_name == FIRST_CONTACT_TEMPLATE, Message.sent_at.is_not(None))
        .group_by(Message.conversation_id)
        .subquery()
    )
    replied = set(
        session.execute(
            select(Conversation.contact_id)
            .join(first_contact, first_contact.c.conversation_id == Conversation.id)
            .join(
                Message,
                and_(
                    Message.conversation_id == Conversation.id,
                    Message.direction == "inbound",
                    Message.created_at >= first_contact.c.sent_at,
                ),
            )
            .where(in_cohort)
        ).scalars()
    )
    qualified = replied & set(
        session.execute(
            select(Conversation.contact_id)
            .join(QualificationAnswer, QualificationAnswer.conversation_id == Conversation.id)
            .where(in_cohort, QualificationAnswer.qualified == "true")
        ).scalars()
    )
    appointments = session.execute(
        select(Conversation.contact_id, Appointment.status)
        .join(Appointment, Appointment.conversation_id == Conversation.id)
        .where(in_cohort)
    ).all()
    booked = qualified & {contact_id for contact_id, _status in appointments}
    attended = booked & {contact_id for contact_id, status in appointments if status == "attended"}
    return Funnel(start, end, len(opted_in), len(replied), len(qualified), len(booked), len(attended))


# --- JSON endpoints -----------------------------------------------------------------------------------------


@api.get("/kpis")
def kpi_tiles(tz: str | None = Query(None, max_length=64), session: Session = Depends(db_session)) -> dict:
    """KPIs of today and of this ISO week, in the team's time zone unless `tz` is given."""
    zone = _zone(tz)
    today = _today(zone)
    return {
        "now": now().isoformat(),
        "timezone": zone,
        "today": kpis.compute(session, *kpis.period_bounds(today, "day", zone)).as_dict(),
        "week": kpis.compute(session, *kpis.period_bounds(today, "week", zone)).as_dict(),
    }


@api.get("/funnel")
def funnel_view(
    days: int = Query(14, ge=1, le=TREND_DAYS_MAX),
    tz: str | None = Query(None, max_length=64),
    session: Session = Depends(db_session),
) -> dict:
    """The funnel of the contacts who opted in during the last `days` local days (today included)."""
    zone = _zone(tz)
    today = _today(zone)
    start, _ = kpis.period_bounds(today - timedelta(days=days - 1), "day", zone)
    _, end = kpis.period_bounds(today, "day", zone)
    return {"timezone": zone, "days": days, **funnel(session, start, end).as_dict()}


@api.get("/trends")
def trends(
    days: int = Query(14, ge=1, le=TREND_DAYS_MAX),
    tz: str | None = Query(None, max_length=64),
    session: Session = Depends(db_session),
) -> dict:
    """Daily KPIs (`kpis.series`) for the last `days` local days, oldest first."""
    zone = _zone(tz)
    today = _today(zone)
    first = today - timedelta(days=days - 1)
    periods = kpis.series(session, first, today, "day", zone)
    return {
        "timezone": zone,
        "days": [
            {"day": (first + timedelta(days=index)).isoformat(), **period.as_dict()}
            for index, period in enumerate(periods)
        ],
    }


router.include_router(api)
