"""Human handover: start, the team's SLA, the first human reply, and hand-back to the bot (issue 10 points 6-8).

Lifecycle of one `handovers` row:
- `start` (called by the Rasa handover action or the ops API): the conversation becomes `owner=human`,
  `status=handover`; the team is notified through the CRM outbox (`handover`) and a metric; bot follow-ups pause
  (`tasks.on_handover_started`); the lead is told that a human takes over (this module sends that German text as
  `sender_role="system"`, so callers must NOT utter their own: a bot message would be blocked by the policy gate
  anyway, since the human now owns the conversation); an SLA check task `handover_sla` is scheduled.
- `check_sla` (the scheduler calls it directly for `handover_sla` tasks, via `check_sla_task`; no Rasa turn is
  needed because the bot is silent during a handover): when no human answered within `HANDOVER_SLA_MINUTES` of team
  business time, the team is alerted again (CRM `handover` row with `escalation: true`, `HANDOVER_ESCALATIONS`) and
  the lead gets ONE polite message saying when to expect an answer; outside team hours the lead is told when the
  team is back. `lead_notified_at` guarantees one such message per handover; a handover that starts outside team
  hours already says when the team is back in its first message, which therefore counts as that one message.
- `record_human_reply`: the first outbound `sender_role="human"` message sets `first_human_response_at` (KPI
  "median time to first human response").
- `hand_back`: owner back to the bot, status to what the answers say, `tasks.on_handed_back`, and, after the
  caller committed, `trigger_resume` fires `EXTERNAL_resume` so the bot continues where the lead was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot import metrics, phone
from leadbot.clock import now as clock_now
from leadbot.config import Settings, settings
from leadbot.db.models import Conversation, Handover, QualificationAnswer, TaskScheduled
from leadbot.services import audit, crm_outbox, outbound, tasks

if TYPE_CHECKING:
    from scheduler.rasa_client import RasaClient

logger = logging.getLogger(__name__)

SLA_TASK_TYPE = "handover_sla"
RESUME_INTENT = "EXTERNAL_resume"
# Team hours are searched at most this many days ahead (a week plus holidays' worth of slack).
_MAX_DAYS_AHEAD = 14
_WEEKDAYS_DE = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")


class HandoverError(ValueError):
    """The conversation is not in a state that allows this handover operation."""


# --- Team business hours (pure functions over aware datetimes) ---------------------------------------------


def _team_day_bounds(day: date, cfg: Settings) -> tuple[datetime, datetime] | None:
    """Opening and closing time (UTC) of the team on a local calendar day, or None when it is not a workday."""
    if day.weekday() not in cfg.team_workdays:
        return None
    zone = ZoneInfo(cfg.team_timezone)
    opens = datetime.combine(day, time(*cfg.team_hours_start), tzinfo=zone).astimezone(timezone.utc)
    closes = datetime.combine(day, time(*cfg.team_hours_end), tzinfo=zone).astimezone(timezone.utc)
    return (opens, closes) if opens < closes else None


def _team_days(moment: datetime, cfg: Settings) -> list[tuple[datetime, datetime]]:
    start_day = moment.astimezone(ZoneInfo(cfg.team_timezone)).date()
    days = (_team_day_bounds(start_day + timedelta(days=offset), cfg) for offset in range(_MAX_DAYS_AHEAD))
    return [bounds for bounds in days if bounds is not None]


def in_team_hours(moment: datetime, cfg: Settings | None = None) -> bool:
    cfg = cfg or settings()
    bounds = _team_day_bounds(moment.astimezone(ZoneInfo(cfg.team_timezone)).date(), cfg)
    return bounds is not None and bounds[0] <= moment < bounds[1]


def next_team_opening(moment: datetime, cfg: Settings | None = None) -> datetime:
    """`moment` itself inside team hours, else when the team is next back."""
    cfg = cfg or settings()
    for opens, closes in _team_days(moment, cfg):
        if moment < closes:
            return max(moment, opens)
    raise ValueError("no team hours configured (TEAM_WORKDAYS / TEAM_HOURS_*)")


def add_team_minutes(moment: datetime, minutes: float, cfg: Settings | None = None) -> datetime:
    """The moment when `minutes` of team business time have passed after `moment` (the SLA deadline)."""
    cfg = cfg or settings()
    remaining = timedelta(minutes=minutes)
    for opens, closes in _team_days(moment, cfg):
        if moment >= closes:
            continue
        start = max(moment, opens)
        if start + remaining <= closes:
            return start + remaining
        remaining -= closes - start
    raise ValueError("no team hours configured (TEAM_WORKDAYS / TEAM_HOURS_*)")


def describe_when(moment: datetime, tz_name: str, now: datetime) -> str:
    """German "um 14:30 Uhr" / "morgen um 09:00 Uhr" / "am Montag, 30.11., um 09:00 Uhr" in the lead's zone."""
    zone = ZoneInfo(tz_name)
    local, today = moment.astimezone(zone), now.astimezone(zone).date()
    clock_text = f"um {local:%H:%M} Uhr"
    if local.date() == today:
        return clock_text
    if local.date() == today + timedelta(days=1):
        return f"morgen {clock_text}"
    return f"am {_WEEKDAYS_DE[local.weekday()]}, {local:%d.%m.}, {clock_text}"


# --- Texts the lead reads (German, du-form) ---------------------------------------------------------------


def _text_started(team_back: str | None) -> str:
    if team_back is None:
        return "Alles klar, ich gebe dich an mein Team weiter 🙌 Jemand meldet sich gleich hier im Chat bei dir."
    return (
        "Alles klar, ich gebe dich an mein Team weiter 🙌 Gerade ist niemand erreichbar – "
        f"wir sind {team_back} wieder da und melden uns dann hier bei dir."
    )


def _text_sla_waiting(expected: str) -> str:
    return (
        "Sorry, dass es gerade etwas dauert! Ich hab im Team nochmal nachgehakt – "
        f"jemand meldet sich spätestens {expected} bei dir."
    )


def _text_sla_team_away(team_back: str) -> str:
    return (
        "Danke für deine Geduld! Unser Team ist gerade nicht erreichbar – "
        f"wir sind {team_back} wieder da und melden uns dann direkt bei dir."
    )


# --- Use cases -------------------------------------------------------------------------------------------


def open_handover(session: Session, conversation_id: int) -> Handover | None:
    return session.execute(
        select(Handover)
        .where(Handover.conversation_id == conversation_id, Handover.ended_at.is_(None))
        .order_by(Handover.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _schedule_sla_check(session: Session, conversation: Conversation, handover: Handover, run_at: datetime) -> None:
    tasks.schedule(
        session,
        conversation,
        SLA_TASK_TYPE,
        run_at,
        payload={"handover_id": handover.id},
        # One check per handover and deadline: a replayed start or check does not stack tasks.
        dedupe_key=f"handover_sla:{handover.id}:{int(run_at.timestamp())}",
    )


def _tell_lead(session: Session, conversation: Conversation, text: str, what: str) -> outbound.OutboundResult:
    result = outbound.enqueue(session, conversation, text=text, sender_role="system")
    if not result.allowed:
        # The row and the policy_blocked_send audit event exist; the team sees it in the CRM note and the audit.
        logger.info("handover %s message to conversation %s blocked: %s", what, conversation.id, result.reason)
    return result


def _notify_team(
    session: Session, handover: Handover, contact_id: int, *, due_at: datetime, text: str, escalation: bool = False
) -> None:
    """The CRM handover port (a task for the team), for the start of a handover and for its escalation."""
    crm_outbox.enqueue(
        session,
        contact_id,
        "handover",
        {
            "conversation_id": handover.conversation_id,
            "handover_id": handover.id,
            "reason": handover.reason,
            "escalation": escalation,
            "started_at": handover.started_at.isoformat(),
            "due_at": due_at.isoformat(),
            "text": text,
        },
    )


def start(
    session: Session,
    conversation: Conversation,
    reason: str,
    resume_state: str | None = None,
    *,
    notify_lead: bool = True,
) -> Handover:
    """Hand the conversation to the team (the caller commits). Starting twice returns the open handover."""
    existing = open_handover(session, conversation.id)
    if existing is not None:
        return existing
    cfg = settings()
    current = clock_now()
    contact = conversation.contact
    handover = Handover(
        conversation_id=conversation.id,
        reason=reason[:64],
        resume_state=(resume_state or conversation.current_state)[:64],
        started_at=current,
    )
    session.add(handover)
    conversation.owner = "human"
    conversation.status = "handover"
    conversation.updated_at = current
    session.flush()
    audit.record(session, contact.id, "handover", action="started", handover_id=handover.id, reason=reason)
    _notify_team(
        session,
        handover,
        contact.id,
        due_at=add_team_minutes(current, cfg.handover_sla_minutes, cfg),
        text=f"Der Lead möchte mit einem Menschen sprechen (Grund: {reason}). Bitte im WhatsApp-Chat antworten "
        "und danach an den Bot zurückgeben.",
    )
    metrics.HANDOVERS.labels(reason=reason).inc()
    tasks.on_handover_started(session, conversation)
    if notify_lead:
        if in_team_hours(current, cfg):
            _tell_lead(session, conversation, _text_started(None), "start")
        else:
            team_back = describe_when(next_team_opening(current, cfg), contact.timezone or cfg.team_timezone, current)
            _tell_lead(session, conversation, _text_started(team_back), "start")
            # The lead already knows when to expect the team: that is this handover's one SLA message.
            handover.lead_notified_at = current
    # First look after the SLA in wall-clock time: if the team has gone home by then, the lead hears when it is back
    # (instead of silence until the business-time deadline); `check_sla` reschedules itself to that deadline.
    _schedule_sla_check(session, conversation, handover, current + timedelta(minutes=cfg.handover_sla_minutes))
    logger.info("handover %s started for conversation %s (%s)", handover.id, conversation.id, reason)
    return handover


@dataclass(frozen=True)
class SlaOutcome:
    escalated: bool = False
    lead_notified: bool = False
    rescheduled_for: datetime | None = None
    reason: str = ""


def check_sla(session: Session, handover: Handover) -> SlaOutcome:
    """The `handover_sla` task: escalate and notify the lead once if no human answered in time (caller commits)."""
    if handover.ended_at is not None or handover.first_human_response_at is not None:
        return SlaOutcome(reason="answered_or_ended")
    cfg = settings()
    current = clock_now()
    conversation = session.get(Conversation, handover.conversation_id)
    contact = conversation.contact
    lead_tz = contact.timezone or cfg.team_timezone
    deadline = add_team_minutes(handover.started_at, cfg.handover_sla_minutes, cfg)
    team_here = in_team_hours(current, cfg)
    lead_notified = False

    if not team_here and handover.lead_notified_at is None:
        team_back = describe_when(next_team_opening(current, cfg), lead_tz, current)
        _tell_lead(session, conversation, _text_sla_team_away(team_back), "team-away")
        handover.lead_notified_at = current
        lead_notified = True

    if current < deadline:
        # Not due yet in team business time (started before opening hours, or the team is away): look again then.
        _schedule_sla_check(session, conversation, handover, deadline)
        return SlaOutcome(lead_notified=lead_notified, rescheduled_for=deadline, reason="not_due")

    escalated = False
    if handover.escalated_at is None:
        handover.escalated_at = current
        waiting = int((current - handover.started_at).total_seconds() // 60)
        _notify_team(
            session,
            handover,
            contact.id,
            due_at=current,
            text=f"Eskalation: Der Lead wartet seit {waiting} Minuten auf eine Antwort (Grund: {handover.reason}). "
            "Bitte jetzt im WhatsApp-Chat antworten.",
            escalation=True,
        )
        audit.record(session, contact.id, "handover", action="escalated", handover_id=handover.id)
        metrics.HANDOVER_ESCALATIONS.inc()
        escalated = True
    if handover.lead_notified_at is None:
        expected = describe_when(add_team_minutes(current, cfg.handover_sla_minutes, cfg), lead_tz, current)
        _tell_lead(session, conversation, _text_sla_waiting(expected), "sla")
        handover.lead_notified_at = current
        lead_notified = True
    return SlaOutcome(escalated=escalated, lead_notified=lead_notified, reason="overdue")


def check_sla_task(session: Session, task: TaskScheduled) -> SlaOutcome:
    """Entry point for the scheduler's `handover_sla` tasks (payload `{"handover_id": ...}`)."""
    handover_id = (task.payload_json or {}).get("handover_id")
    handover = session.get(Handover, handover_id) if handover_id is not None else None
    if handover is None:
        return SlaOutcome(reason="handover_gone")
    return check_sla(session, handover)


def record_human_reply(session: Session, conversation: Conversation) -> Handover | None:
    """Count a human's outbound reply; the first one of a handover is its first human response."""
    handover = open_handover(session, conversation.id)
    if handover is not None and handover.first_human_response_at is None:
        handover.first_human_response_at = clock_now()
    return handover


def _status_after_handback(session: Session, conversation: Conversation) -> str:
    qualified = session.execute(
        select(QualificationAnswer.qualified).where(QualificationAnswer.conversation_id == conversation.id)
    ).scalar_one_or_none()
    return {"true": "qualified", "false": "disqualified"}.get(qualified or "", "open")


def hand_back(session: Session, conversation: Conversation) -> Handover:
    """Give the conversation back to the bot (the caller commits, then calls `trigger_resume`)."""
    handover = open_handover(session, conversation.id)
    if conversation.owner != "human" and handover is None:
        raise HandoverError("the bot already owns this conversation")
    current = clock_now()
    if handover is None:  # owned by a human without a recorded handover (set by hand): close the gap cleanly
        handover = Handover(conversation_id=conversation.id, reason="unrecorded", started_at=current)
        session.add(handover)
    handover.ended_at = current
    conversation.owner = "bot"
    conversation.status = _status_after_handback(session, conversation)
    conversation.updated_at = current
    session.flush()
    audit.record(
        session,
        conversation.contact_id,
        "handover",
        action="ended",
        handover_id=handover.id,
        resume_state=handover.resume_state,
    )
    tasks.on_handed_back(session, conversation)
    return handover


def trigger_resume(sender_id: str, client: RasaClient | None = None) -> bool:
    """Fire `EXTERNAL_resume` on Rasa's trigger_intent API so the bot continues where the lead was.

    Called after the hand-back is committed (the resumed turn must see `owner=bot`). Returns False when Rasa did
    not accept it; the conversation is handed back either way and resumes at the lead's next message.
    """
    # Imported here: the HTTP client is not installed in the Rasa process, which also starts handovers.
    from scheduler.rasa_client import HttpRasaClient, RasaError

    own_client = client is None
    rasa = client or HttpRasaClient.from_settings()
    try:
        rasa.trigger_intent(sender_id, RESUME_INTENT, {})
    except RasaError as exc:
        logger.warning("EXTERNAL_resume for %s failed: %s", phone.mask(sender_id), exc)
        return False
    finally:
        if own_client:
            rasa.close()
    return True
