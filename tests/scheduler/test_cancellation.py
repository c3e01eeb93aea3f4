"""Each cancellation rule of issue 5 point 3, at scheduling time (hooks) and again at fire time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from leadbot.db.models import TaskScheduled
from leadbot.services import tasks
from scheduler.firing import Firer
from scheduler.rasa_client import HttpRasaClient
from tests.scheduler.helpers import TOKEN, book, lead_writes, make_lead


def _tasks(session, conversation_id):
    query = select(TaskScheduled).where(TaskScheduled.conversation_id == conversation_id).order_by(TaskScheduled.id)
    return list(session.execute(query).scalars())


def _state(session, conversation_id):
    return [
        (t.task_type, t.status, (t.payload_json or {}).get("cancel_reason")) for t in _tasks(session, conversation_id)
    ]


def test_reply_cancels_pending_nudge_and_newer_question_replaces_it(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, at=frozen_clock.now())
    first = tasks.after_bot_turn(session, conversation, asked_question=True)
    assert first.run_at == frozen_clock.now() + timedelta(minutes=30)
    frozen_clock.advance(timedelta(minutes=10))
    second = tasks.after_bot_turn(session, conversation, asked_question=True)
    assert second.id != first.id
    lead_writes(session, conversation, frozen_clock.now())
    assert _state(session, conversation.id) == [
        ("nudge_30m", "cancelled", "replaced_by_newer_question"),
        ("nudge_30m", "cancelled", "lead_replied"),
    ]
    # A bot turn without a question schedules nothing; replaying the same turn is idempotent.
    assert tasks.after_bot_turn(session, conversation, asked_question=False) is None
    third = tasks.after_bot_turn(session, conversation, asked_question=True)
    assert tasks.schedule(session, conversation, "nudge_30m", third.run_at, dedupe_key=third.dedupe_key).id == third.id


def test_no_nudge_outside_the_flow_or_while_a_human_owns(session, frozen_clock, scheduler_env):
    disqualified = make_lead(session, "+4915100000001", status="disqualified", at=frozen_clock.now())
    assert tasks.after_bot_turn(session, disqualified, asked_question=True) is None
    human = make_lead(session, "+4915100000002", at=frozen_clock.now())
    human.owner = "human"
    assert tasks.after_bot_turn(session, human, asked_question=True) is None
    revoked = make_lead(session, "+4915100000003", consent="revoked", at=frozen_clock.now())
    assert tasks.after_bot_turn(session, revoked, asked_question=True) is None


def test_booking_cancels_followups_and_schedules_reminders(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, status="qualified", at=frozen_clock.now())
    tasks.on_qualified(session, conversation)
    assert [t.run_at - frozen_clock.now() for t in _tasks(session, conversation.id)] == [
        timedelta(hours=24), timedelta(hours=48)
    ]
    starts_at = frozen_clock.now() + timedelta(days=2)
    book(session, conversation, starts_at)
    assert _state(session, conversation.id) == [
        ("followup_24h", "cancelled", "booked"),
        ("followup_48h", "cancelled", "booked"),
        ("reminder_22h", "pending", None),
        ("reminder_55m", "pending", None),
        ("reminder_5m", "pending", None),
    ]
    reminders = _tasks(session, conversation.id)[2:]
    offsets = [timedelta(hours=22), timedelta(minutes=55), timedelta(minutes=5)]
    assert [starts_at - t.run_at for t in reminders] == offsets
    assert all(t.payload_json["deadline"] == starts_at.isoformat() for t in reminders)
    # Qualified again after booking (e.g. a replayed event) does not bring the follow-ups back.
    assert tasks.on_qualified(session, conversation) == []


def test_short_notice_booking_skips_reminders_whose_moment_passed(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, status="qualified", at=frozen_clock.now())
    book(session, conversation, frozen_clock.now() + timedelta(minutes=30))
    assert [t.task_type for t in _tasks(session, conversation.id)] == ["reminder_5m"]


def test_cancel_and_move_an_appointment(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, status="qualified", at=frozen_clock.now())
    appointment = book(session, conversation, frozen_clock.now() + timedelta(days=2))
    old_ids = {t.id for t in _tasks(session, conversation.id)}
    appointment.starts_at += timedelta(days=1)
    moved = tasks.on_appointment_moved(session, appointment)
    assert {t.task_type for t in moved} == {"reminder_22h", "reminder_55m", "reminder_5m"}
    assert all(t.run_at < appointment.starts_at and t.id not in old_ids for t in moved)
    assert {t.payload_json.get("cancel_reason") for t in _tasks(session, conversation.id) if t.id in old_ids} == {
        "appointment_moved"
    }
    appointment.status = "cancelled"
    assert tasks.on_appointment_cancelled(session, appointment) == 3
    assert {t.status for t in _tasks(session, conversation.id)} == {"cancelled"}


def test_revoked_consent_cancels_all_marketing_tasks_including_paused_ones(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, status="qualified", at=frozen_clock.now())
    tasks.schedule(session, conversation, "welcome", frozen_clock.now() + timedelta(minutes=5))
    tasks.on_qualified(session, conversation)
    tasks.on_handover_started(session, conversation)
    tasks.after_bot_turn(session, conversation, asked_question=True)  # owner is still bot in this fixture
    tasks.on_consent_revoked(session, conversation)
    assert {(t.status, t.payload_json["cancel_reason"]) for t in _tasks(session, conversation.id)} == {
        ("cancelled", "consent_revoked")
    }
    # The hand-back finds nothing to revive.
    assert tasks.on_handed_back(session, conversation) == []


def test_handover_pauses_and_hand_back_revives_only_future_tasks(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, status="qualified", at=frozen_clock.now())
    tasks.on_qualified(session, conversation)
    tasks.schedule(session, conversation, "handover_sla", frozen_clock.now() + timedelta(minutes=15))
    conversation.owner = "human"
    assert tasks.on_handover_started(session, conversation) == 2
    frozen_clock.advance(timedelta(hours=30))  # the 24 h follow-up falls due during the handover
    conversation.owner = "bot"
    revived = tasks.on_handed_back(session, conversation)
    assert [t.task_type for t in revived] == ["followup_48h"]
    assert _state(session, conversation.id) == [
        ("followup_24h", "cancelled", "missed_during_handover"),
        ("followup_48h", "pending", None),
        ("handover_sla", "pending", None),
    ]


def test_fire_time_checks_catch_what_the_hooks_missed(engine, session, frozen_clock, fake_rasa, scheduler_env):
    """Hooks not called (or raced): the worker re-checks reply, booking, consent and owner before firing."""
    t0 = frozen_clock.now()
    replied = make_lead(session, "+4915100000011", at=t0)
    tasks.schedule(session, replied, "nudge_30m", t0 + timedelta(minutes=30))
    replied.last_inbound_at = t0 + timedelta(minutes=1)  # inbound persisted without the hook
    booked = make_lead(session, "+4915100000012", status="qualified", at=t0)
    tasks.on_qualified(session, booked)
    booked_appointment = book(session, booked, t0 + timedelta(days=3))
    tasks.schedule(session, booked, "followup_24h", t0 + timedelta(minutes=30), dedupe_key="late-followup")
    revoked = make_lead(session, "+4915100000013", status="qualified", at=t0)
    tasks.schedule(session, revoked, "followup_24h", t0 + timedelta(minutes=30))
    revoked.contact.consent_status = "revoked"
    human = make_lead(session, "+4915100000014", at=t0)
    tasks.schedule(session, human, "nudge_30m", t0 + timedelta(minutes=30))
    human.owner = "human"
    moved = make_lead(session, "+4915100000015", status="qualified", at=t0)
    moved_appointment = book(session, moved, t0 + timedelta(hours=2))
    moved_appointment.starts_at += timedelta(hours=1)  # moved without the hook
    session.commit()

    frozen_clock.set(t0 + timedelta(hours=2))
    stats = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "w").run_once()
    assert fake_rasa.calls == []
    assert (stats.claimed, stats.skipped, stats.fired) == (6, 6, 0)
    session.expire_all()
    due = session.execute(select(TaskScheduled).where(TaskScheduled.run_at <= frozen_clock.now())).scalars()
    reasons = sorted((t.conversation_id, t.task_type, t.status, t.payload_json["cancel_reason"]) for t in due)
    assert reasons == [
        (replied.id, "nudge_30m", "cancelled", "lead_replied"),
        (booked.id, "followup_24h", "cancelled", "booked"),
        (revoked.id, "followup_24h", "cancelled", "consent_revoked"),
        (human.id, "nudge_30m", "cancelled", "handover_paused"),
        (moved.id, "reminder_55m", "cancelled", "appointment_moved"),
        (moved.id, "reminder_5m", "cancelled", "appointment_moved"),
    ]
    assert booked_appointment.status == "booked"
