"""Randomized simulation: many leads over 7 simulated days; every outbound row must obey the policy invariants.

240 leads (fixed seed) in eight time zones, among them ones where 07:00 local is night in Berlin
(America/Los_Angeles, Asia/Tokyo, Pacific/Auckland), opt in at random hours, reply after random delays or never,
qualify, book appointments in the Berlin team's hours (night for some leads, so reminders meet quiet hours and
their deadline), revoke consent with STOP, and get handed to a human and back. The scheduler (the real `Firer` and
queue) fires the tasks; a fired scheduled intent does what Rasa + `action_send_scheduled_template` + the channel
do: `tasks.message_for_fire` and `outbound.enqueue` with the same arguments. The simulated bot also answers every
lead message with a session text through `outbound.enqueue`, so the 24 h rule is exercised too.

Checked for EVERY outbound row that was queued for sending:
- 24 h / template: a session message goes out (`send_at`) within 24 h of a lead message that preceded it;
  a template is an approved one;
- quiet hours: `send_at` is 07:00-23:00 in the contact's time zone (the opt-out confirmation answers the lead's own
  STOP and is exempt by policy);
- consent: marketing only with consent granted, and nothing marketing still queued to go out after a revocation;
- deadline: a reminder never goes out after its appointment starts;
- owner: no bot message is queued while a human owns the conversation.
"""

from __future__ import annotations

import heapq
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.db.models import AuditEvent, Contact, Conversation, Message, TaskScheduled
from leadbot.domain.policy import Purpose
from leadbot.domain.templates import get_template
from leadbot.services import consent, outbound, tasks
from leadbot.services.leads import OptInData, opt_in
from scheduler.firing import Firer
from tests.scheduler.helpers import book, lead_writes, next_due, send_like_action

SEED = 20261125
LEADS = 240
DAYS = 7
TIMEZONES = [
    "Europe/Berlin",
    "Europe/London",
    "America/Los_Angeles",
    "America/New_York",
    "Asia/Tokyo",
    "Pacific/Auckland",
    "Asia/Kolkata",
    "America/Sao_Paulo",
]
BERLIN = ZoneInfo("Europe/Berlin")
QUIET_END, QUIET_START = time(7, 0), time(23, 0)


@dataclass
class Lead:
    index: int
    tz: str
    opt_in_at: datetime
    reply_delays: list[timedelta]
    qualifies: bool
    book_delay: timedelta | None
    revoke_at: datetime | None
    handover: tuple[datetime, timedelta] | None
    conversation_id: int = 0
    revoked: bool = False
    human_intervals: list[tuple[datetime, datetime]] = field(default_factory=list)


def _delay(rng: random.Random) -> timedelta:
    # Mostly minutes, sometimes hours, sometimes more than a day (window closed, nudges and follow-ups due).
    bucket = rng.random()
    if bucket < 0.5:
        return timedelta(minutes=rng.randint(1, 25))
    if bucket < 0.8:
        return timedelta(minutes=rng.randint(31, 600))
    return timedelta(hours=rng.randint(20, 40))


def _make_leads(rng: random.Random, t0: datetime) -> list[Lead]:
    leads = []
    for index in range(LEADS):
        opt_in_at = t0 + timedelta(minutes=rng.randint(0, 2 * 24 * 60))
        replies = rng.choice([0, 1, 2, 3, 3])
        qualifies = replies == 3 and rng.random() < 0.7
        book_delay = timedelta(minutes=rng.randint(10, 60 * 60)) if qualifies and rng.random() < 0.6 else None
        revoke_at = opt_in_at + timedelta(minutes=rng.randint(10, 5 * 24 * 60)) if rng.random() < 0.12 else None
        handover = None
        if rng.random() < 0.08:
            start = opt_in_at + timedelta(minutes=rng.randint(20, 3 * 24 * 60))
            handover = (start, timedelta(hours=rng.randint(1, 30)))
        leads.append(Lead(index, TIMEZONES[index % len(TIMEZONES)], opt_in_at, [_delay(rng) for _ in range(replies)],
                          qualifies, book_delay, revoke_at, handover))
    return leads


def _team_slot(rng: random.Random, after: datetime) -> datetime:
    """An appointment in the Berlin team's hours (09:00-17:30), at least 3 hours ahead."""
    day = (after + timedelta(hours=3)).astimezone(BERLIN).date() + timedelta(days=rng.randint(0, 3))
    while True:
        slot = datetime.combine(day, time(rng.randint(9, 17), rng.choice([0, 30])), tzinfo=BERLIN)
        if slot > after + timedelta(hours=3):
            return slot.astimezone(after.tzinfo)
        day += timedelta(days=1)


class Simulation:
    def __init__(self, engine: Any, clock: Any, rng: random.Random) -> None:
        self.engine, self.clock, self.rng = engine, clock, rng
        self.events: list[tuple[datetime, int, str, int]] = []
        self.seq = 0
        self.leads: list[Lead] = []
        self.by_conversation: dict[int, Lead] = {}
        self.deadlines: dict[int, datetime] = {}  # outbound message id → its reminder's deadline
        self.fired = Counter()
        # The worker fires several conversations at once (as real Rasa serves them): guard the bookkeeping.
        self.lock = threading.Lock()

    def push(self, at: datetime, kind: str, lead: Lead) -> None:
        with self.lock:
            self.seq += 1
            heapq.heappush(self.events, (at, self.seq, kind, lead.index))

    # --- Rasa, as far as the scheduler can see it --------------------------------------------------------
    def trigger_intent(self, sender_id: str, intent: str, entities: dict[str, str]) -> dict[str, Any]:
        task_id = int(entities["task_id"])
        with self.lock:
            self.fired[intent] += 1
        with Session(self.engine, future=True, expire_on_commit=False) as session:
            result = send_like_action(session, task_id)
            task = session.get(TaskScheduled, task_id)
            if result is not None and task.appointment_id is not None:
                self.deadlines[result.message_id] = datetime.fromisoformat(task.payload_json["deadline"])
            lead = self.by_conversation[task.conversation_id]
            if intent == "EXTERNAL_welcome":
                # The welcome asks "Passt das?": the dialogue schedules the nudge, and the lead answers (or not).
                tasks.after_bot_turn(session, session.get(Conversation, task.conversation_id), asked_question=True)
                if lead.reply_delays and not lead.revoked:
                    self.push(self.clock.now() + lead.reply_delays[0], "reply", lead)
            session.commit()
        return {"tracker": {"sender_id": sender_id}}

    # --- Lead behaviour --------------------------------------------------------------------------------
    def handle(self, kind: str, lead: Lead) -> None:
        now = self.clock.now()
        with Session(self.engine, future=True, expire_on_commit=False) as session:
            if kind == "opt_in":
                result = opt_in(session, OptInData(f"+49151{lead.index:08d}", "sim", "v1", now, "Lena", lead.tz))
                lead.conversation_id = result.conversation_id
                self.by_conversation[result.conversation_id] = lead
                if lead.revoke_at:
                    self.push(lead.revoke_at, "revoke", lead)
                if lead.handover:
                    self.push(lead.handover[0], "handover", lead)
            elif not lead.revoked:
                conversation = session.get(Conversation, lead.conversation_id)
                getattr(self, f"_{kind}")(session, conversation, lead, now)
            session.commit()

    def _bot_says(self, session: Session, conversation: Conversation, text: str, question: bool) -> None:
        outbound.enqueue(session, conversation, text=text, purpose=Purpose.CONVERSATION)
        tasks.after_bot_turn(session, conversation, asked_question=question)

    def _reply(self, session: Session, conversation: Conversation, lead: Lead, now: datetime) -> None:
        lead_writes(session, conversation, now)
        lead.reply_delays.pop(0)
        if lead.reply_delays:
            self._bot_says(session, conversation, "Schaltest du aktuell Ads?", question=True)
            self.push(now + lead.reply_delays[0], "reply", lead)
        elif lead.qualifies and conversation.owner == "bot":
            conversation.status = "qualified"
            tasks.on_qualified(session, conversation)
            self._bot_says(session, conversation, "Passt! Soll ich dir Termine schicken?", question=True)
            if lead.book_delay:
                self.push(now + lead.book_delay, "book", lead)
        elif conversation.owner == "bot":
            conversation.status = "disqualified"
            self._bot_says(session, conversation, "Danke dir! Aktuell passt es leider noch nicht.", question=False)

    def _book(self, session: Session, conversation: Conversation, lead: Lead, now: datetime) -> None:
        lead_writes(session, conversation, now, "Ja, gerne")
        book(session, conversation, _team_slot(self.rng, now))
        self._bot_says(session, conversation, "Top, dein Termin steht!", question=False)

    def _revoke(self, session: Session, conversation: Conversation, lead: Lead, now: datetime) -> None:
        lead_writes(session, conversation, now, "STOP")
        consent.revoke(session, conversation.contact, "whatsapp_stop")
        lead.revoked = True

    def _handover(self, session: Session, conversation: Conversation, lead: Lead, now: datetime) -> None:
        if conversation.owner == "human":
            return
        conversation.owner, conversation.status = "human", "handover"
        tasks.on_handover_started(session, conversation)
        end = now + lead.handover[1]
        lead.human_intervals.append((now, end))
        self.push(end, "hand_back", lead)

    def _hand_back(self, session: Session, conversation: Conversation, lead: Lead, now: datetime) -> None:
        conversation.owner = "bot"
        conversation.status = "qualified" if lead.qualifies and not lead.reply_delays else "open"
        tasks.on_handed_back(session, conversation)

    # --- The clock ---------------------------------------------------------------------------------------
    def run(self, firer: Firer, end: datetime) -> None:
        for lead in self.leads:
            self.push(lead.opt_in_at, "opt_in", lead)
        while True:
            candidates = [moment for moment in (self.events[0][0] if self.events else None, next_due(self.engine))
                          if moment is not None]
            if not candidates or min(candidates) > end:
                break
            self.clock.set(max(self.clock.now(), min(candidates)))
            while self.events and self.events[0][0] <= self.clock.now():
                _, _, kind, index = heapq.heappop(self.events)
                self.handle(kind, self.leads[index])
            firer.run_once()


def _violations(session: Session, sim: Simulation) -> tuple[list[str], Counter]:
    violations: list[str] = []
    outcome = Counter()
    inbound: dict[int, list[datetime]] = {}
    for message in session.execute(select(Message).where(Message.direction == "inbound")).scalars():
        inbound.setdefault(message.conversation_id, []).append(message.created_at)
    revoked_at = {
        event.contact_id: event.created_at
        for event in session.execute(select(AuditEvent).where(AuditEvent.event_type == "consent_revoked")).scalars()
    }
    rows = session.execute(
        select(Message, Conversation, Contact)
        .join(Conversation, Message.conversation_id == Conversation.id)
        .join(Contact, Conversation.contact_id == Contact.id)
        .where(Message.direction == "outbound")
    ).all()
    for message, conversation, contact in rows:
        outcome[message.delivery_status if message.delivery_status != "failed" else message.error_code] += 1
        if message.delivery_status != "queued":
            continue
        where = f"message {message.id} ({message.template_name or 'session'}, contact {contact.id})"
        purpose = (message.payload_json or {}).get("purpose")
        send_at = message.send_at
        if message.message_type == "template":
            if not get_template(message.template_name).approved:
                violations.append(f"{where}: unapproved template")
        elif purpose != Purpose.OPT_OUT_CONFIRMATION.value and not any(
            at <= message.created_at and send_at < at + timedelta(hours=24) for at in inbound.get(conversation.id, [])
        ):
            violations.append(f"{where}: session message outside the 24 h window (send_at {send_at})")
        local = send_at.astimezone(ZoneInfo(contact.timezone)).time()
        if purpose != Purpose.OPT_OUT_CONFIRMATION.value and not (QUIET_END <= local < QUIET_START):
            violations.append(f"{where}: send_at {local} local in quiet hours ({contact.timezone})")
        if message.is_marketing:
            if contact.consent_timestamp is None or contact.consent_source is None:
                violations.append(f"{where}: marketing without recorded consent")
            revoked = revoked_at.get(contact.id)
            if revoked is not None and revoked <= send_at:
                violations.append(f"{where}: marketing still queued for {send_at} after revocation at {revoked}")
        deadline = sim.deadlines.get(message.id)
        if deadline is not None and send_at > deadline:
            violations.append(f"{where}: reminder at {send_at} after its appointment at {deadline}")
        lead = sim.by_conversation[conversation.id]
        human_owned = any(start <= message.created_at < end for start, end in lead.human_intervals)
        if message.sender_role == "bot" and human_owned:
            violations.append(f"{where}: bot message while a human owned the conversation")
    return violations, outcome


@pytest.mark.slow
def test_randomized_leads_over_seven_days_obey_every_invariant(engine, frozen_clock, scheduler_env, capsys):
    rng = random.Random(SEED)
    t0 = frozen_clock.now()
    sim = Simulation(engine, frozen_clock, rng)
    sim.leads = _make_leads(rng, t0)
    firer = Firer(engine, sim, "sim-worker")
    sim.run(firer, t0 + timedelta(days=DAYS))

    with Session(engine, future=True) as session:
        violations, outcome = _violations(session, sim)
        task_states = Counter(
            (t.task_type, t.status) for t in session.execute(select(TaskScheduled)).scalars()
        )
        done_marketing = sum(n for (kind, status), n in task_states.items()
                             if status == "done" and kind in tasks.MARKETING_TASK_TYPES)
        templates = session.execute(select(Message).where(Message.message_type == "template")).scalars().all()
    with capsys.disabled():
        print(f"\nsimulation: {LEADS} leads, {DAYS} days, tasks fired {sum(sim.fired.values())}: {dict(sim.fired)}")
        print(f"outbound rows: {dict(outcome)}")
        print(f"task states: {dict(sorted(task_states.items()))}")
        print(f"invariant violations: {len(violations)}")
        for violation in violations[:20]:
            print("  " + violation)
    # Every fired scheduled task produced exactly one outbound row through outbound.enqueue.
    assert done_marketing == sum(sim.fired.values()) == len(templates)
    # The scenario really exercised what the invariants guard.
    assert outcome["policy:deferred_past_deadline"] > 0
    assert outcome["policy:consent_revoked"] > 0
    assert any(m.send_at != m.created_at for m in templates if m.delivery_status == "queued")  # quiet-hours shifts
    assert {kind for kind, _ in task_states} >= set(tasks.MARKETING_TASK_TYPES)
    assert len(violations) == 0
