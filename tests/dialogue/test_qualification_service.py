"""leadbot.services.qualification against PostgreSQL: answers, outcome, status/state and the CRM lead upsert."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.clock import FrozenClock
from leadbot.db.models import Conversation, CrmOutbox, QualificationAnswer
from leadbot.phone import sender_id_for
from leadbot.services import qualification

E164 = "+4915112345678"


@pytest.fixture
def conversation(session: Session, frozen_clock: FrozenClock) -> Conversation:
    conversation = qualification.conversation_for_sender(session, sender_id_for(E164))
    assert conversation is not None
    conversation.contact.first_name = "Jana"
    session.commit()
    return conversation


def _upserts(session: Session) -> list[dict]:
    rows = session.execute(select(CrmOutbox).where(CrmOutbox.operation == "lead_upsert").order_by(CrmOutbox.id))
    return [row.payload_json for row in rows.scalars()]


@pytest.mark.parametrize(
    ("ads", "bucket", "qualified", "reason", "status", "state"),
    [
        ("no", None, "false", "no_ads", "disqualified", "disqualified_no_ads"),
        ("no", "300+", "false", "no_ads", "disqualified", "disqualified_no_ads"),
        ("yes", "<100", "false", "low_volume", "disqualified", "disqualified_low_volume"),
        ("yes", "100-300", "true", "volume_100_300", "qualified", "qualified"),
        ("yes", "300+", "true", "volume_300_plus", "qualified", "qualified"),
        ("yes", "unknown", "pending", "volume_unknown", "open", "volume_unknown"),
    ],
)
def test_decide_follows_the_seed_decision_tree(ads, bucket, qualified, reason, status, state) -> None:
    assert qualification.decide(ads, bucket) == qualification.Outcome(qualified, reason, status, state)


def test_non_lead_sender_is_not_persisted(session: Session) -> None:
    assert qualification.conversation_for_sender(session, "default") is None


def test_qualified_lead_is_recorded_with_a_crm_upsert(session: Session, conversation: Conversation) -> None:
    qualification.set_state(session, conversation, qualification.Q1_ADS_RUNNING)
    qualification.record_ads_running(session, conversation, "yes")
    qualification.set_state(session, conversation, qualification.Q2_MONTHLY_LEADS)
    session.commit()
    assert _upserts(session) == []  # moving between questions is no status change

    outcome = qualification.finish(session, conversation, "yes", "100-300", 150)
    session.commit()

    assert outcome.qualified == "true"
    answers = session.execute(select(QualificationAnswer)).scalar_one()
    assert (answers.ads_running, answers.monthly_leads_bucket) == ("yes", "100-300")
    assert answers.monthly_leads_estimate == 150
    assert (answers.qualified, answers.reason) == ("true", "volume_100_300")
    assert (conversation.status, conversation.current_state) == ("qualified", "qualified")
    [upsert] = _upserts(session)
    assert upsert["status"] == "qualified"
    assert upsert["qualified"] == "true"
    assert upsert["monthly_leads_bucket"] == "100-300"
    assert upsert["monthly_leads_estimate"] == 150
    assert upsert["first_name"] == "Jana"


def test_no_ads_disqualifies_and_keeps_the_volume_unknown(session: Session, conversation: Conversation) -> None:
    qualification.finish(session, conversation, "no", None)
    session.commit()
    answers = session.execute(select(QualificationAnswer)).scalar_one()
    assert (answers.ads_running, answers.monthly_leads_bucket, answers.qualified) == ("no", "unknown", "false")
    assert conversation.status == "disqualified"
    assert [row["status"] for row in _upserts(session)] == ["disqualified"]


def test_unknown_volume_is_pending_and_still_reaches_the_crm(session: Session, conversation: Conversation) -> None:
    outcome = qualification.finish(session, conversation, "yes", "unknown", None)
    session.commit()
    assert (outcome.qualified, outcome.status) == ("pending", "open")
    assert conversation.status == "open"
    [upsert] = _upserts(session)  # same status, but the CRM needs the answers
    assert (upsert["qualified"], upsert["reason"]) == ("pending", "volume_unknown")


def test_finishing_twice_updates_the_one_answers_row(session: Session, conversation: Conversation) -> None:
    qualification.finish(session, conversation, "yes", "<100", 40)
    qualification.finish(session, conversation, "yes", "300+", 400)
    session.commit()
    answers = session.execute(select(QualificationAnswer)).scalars().all()
    assert len(answers) == 1
    assert answers[0].monthly_leads_bucket == "300+"
    assert [row["status"] for row in _upserts(session)] == ["disqualified", "qualified"]


def test_restore_names_the_open_question_and_the_answers(session: Session, conversation: Conversation) -> None:
    qualification.set_state(session, conversation, qualification.Q2_MONTHLY_LEADS)
    qualification.record_ads_running(session, conversation, "yes")
    session.commit()
    restored = qualification.restore(session, conversation)
    assert restored == qualification.Restored(
        stage="questions", open_slot="monthly_leads", slots={"ads_running": "yes"}, owner="bot"
    )


def test_restore_during_a_handover_keeps_the_stage_and_the_owner(session: Session, conversation: Conversation) -> None:
    qualification.set_state(session, conversation, qualification.Q1_ADS_RUNNING)
    conversation.owner, conversation.status = "human", "handover"
    session.commit()
    restored = qualification.restore(session, conversation)
    assert (restored.stage, restored.open_slot, restored.owner) == ("questions", "ads_running", "human")


@pytest.mark.parametrize(
    ("state", "stage"),
    [
        ("consent_pending", "consent_pending"),
        ("consent_declined", "declined"),
        ("consent_later", "declined"),
        ("disqualified_low_volume", "disqualified"),
        ("volume_unknown", "pending"),
        ("start", None),
    ],
)
def test_restore_maps_every_state_to_a_stage(session: Session, conversation: Conversation, state, stage) -> None:
    qualification.set_state(session, conversation, state)
    session.commit()
    assert qualification.restore(session, conversation).stage == stage
