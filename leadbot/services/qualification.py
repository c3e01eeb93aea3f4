"""Qualification use cases: persist the answers to Q1/Q2, the outcome and the conversation's state (issue 4 point 5).

Called by the Rasa actions (`actions/qualification.py`, `actions/handover.py`, `actions/session.py`). Every change of
`conversations.status` is handed to the CRM port in the same transaction (`crm_outbox.enqueue(..., "lead_upsert")`).

`conversations.current_state` is the node of the seed's decision tree where the lead is (values in `STATES`); the
Rasa session start restores the dialogue from it, since our database, not the Rasa tracker, is the source of truth.

Outcome rules (seed §4):
  * ads_running "no" -> disqualified (reason `no_ads`).
  * bucket "<100" -> disqualified (`low_volume`), "100-300"/"300+" -> qualified (`volume_100_300`/`volume_300_plus`).
  * bucket "unknown" (the lead could not say, even when asked a second time) -> qualified "pending"
    (`volume_unknown`), status stays "open": they run ads, so we offer the call, where the volume is clarified.
    A human is not pulled in for this; the team sees the pending lead in the CRM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot import phone
from leadbot.clock import now
from leadbot.db.models import Conversation, QualificationAnswer
from leadbot.services import contacts, crm_outbox

logger = logging.getLogger(__name__)

# current_state values owned by the qualification feature (the booking feature adds its own after `qualified`).
CONSENT_PENDING = "consent_pending"
CONSENT_DECLINED = "consent_declined"
CONSENT_LATER = "consent_later"
Q1_ADS_RUNNING = "q1_ads_running"
Q2_MONTHLY_LEADS = "q2_monthly_leads"
DISQUALIFIED_NO_ADS = "disqualified_no_ads"
DISQUALIFIED_LOW_VOLUME = "disqualified_low_volume"
QUALIFIED = "qualified"
VOLUME_UNKNOWN = "volume_unknown"
STATES = (
    CONSENT_PENDING,
    CONSENT_DECLINED,
    CONSENT_LATER,
    Q1_ADS_RUNNING,
    Q2_MONTHLY_LEADS,
    DISQUALIFIED_NO_ADS,
    DISQUALIFIED_LOW_VOLUME,
    QUALIFIED,
    VOLUME_UNKNOWN,
)
QUESTION_STATES = {Q1_ADS_RUNNING: "ads_running", Q2_MONTHLY_LEADS: "monthly_leads"}


@dataclass(frozen=True)
class Outcome:
    qualified: str  # "true" | "false" | "pending"
    reason: str
    status: str  # conversations.status
    state: str  # conversations.current_state


def decide(ads_running: str | None, bucket: str | None) -> Outcome:
    """The seed's decision tree as a pure function (see the module docstring)."""
    if ads_running == "no":
        return Outcome("false", "no_ads", "disqualified", DISQUALIFIED_NO_ADS)
    if bucket == "<100":
        return Outcome("false", "low_volume", "disqualified", DISQUALIFIED_LOW_VOLUME)
    if bucket == "100-300":
        return Outcome("true", "volume_100_300", "qualified", QUALIFIED)
    if bucket == "300+":
        return Outcome("true", "volume_300_plus", "qualified", QUALIFIED)
    return Outcome("pending", "volume_unknown", "open", VOLUME_UNKNOWN)


def conversation_for_sender(session: Session, sender_id: str, *, lock: bool = False) -> Conversation | None:
    """The current conversation of a Rasa sender id (`wa<digits>`); None for ids that are not leadbot leads
    (e.g. `rasa shell`), so the dialogue still runs without touching the database."""
    try:
        e164 = phone.e164_from_sender_id(sender_id)
    except phone.InvalidPhoneNumber:
        logger.info("sender %s is not a WhatsApp lead; qualification not persisted", phone.mask(sender_id))
        return None
    contact = contacts.get_or_create_contact(session, e164)
    return contacts.current_conversation(session, contact, lock=lock)


def answers_for(session: Session, conversation: Conversation) -> QualificationAnswer:
    """The conversation's one `qualification_answers` row, created on first use."""
    row = session.execute(
        select(QualificationAnswer).where(QualificationAnswer.conversation_id == conversation.id)
    ).scalar_one_or_none()
    if row is None:
        row = QualificationAnswer(conversation_id=conversation.id, updated_at=now())
        session.add(row)
        session.flush()
    return row


def _lead_upsert(session: Session, conversation: Conversation, answers: QualificationAnswer | None) -> None:
    contact = conversation.contact
    payload: dict[str, Any] = {
        "contact_id": contact.id,
        "whatsapp_e164": contact.whatsapp_e164,
        "first_name": contact.first_name,
        "conversation_id": conversation.id,
        "status": conversation.status,
        "current_state": conversation.current_state,
    }
    if answers is not None:
        payload.update(
            ads_running=answers.ads_running,
            monthly_leads_bucket=answers.monthly_leads_bucket,
            monthly_leads_estimate=answers.monthly_leads_estimate,
            qualified=answers.qualified,
            reason=answers.reason,
        )
    crm_outbox.enqueue(session, contact.id, "lead_upsert", payload)


def set_state(session: Session, conversation: Conversation, state: str, status: str | None = None) -> bool:
    """Move the conversation to a decision-tree node (and status). Returns True when the status changed, in which
    case the CRM gets a lead upsert in the same transaction."""
    current = now()
    conversation.current_state = state
    conversation.updated_at = current
    if status is None or status == conversation.status:
        return False
    conversation.status = status
    answers = session.execute(
        select(QualificationAnswer).where(QualificationAnswer.conversation_id == conversation.id)
    ).scalar_one_or_none()
    _lead_upsert(session, conversation, answers)
    return True


def record_ads_running(session: Session, conversation: Conversation, value: str) -> QualificationAnswer:
    answers = answers_for(session, conversation)
    answers.ads_running = value
    answers.updated_at = now()
    return answers


def record_volume(
    session: Session, conversation: Conversation, bucket: str, estimate: int | None
) -> QualificationAnswer:
    answers = answers_for(session, conversation)
    answers.monthly_leads_bucket = bucket
    answers.monthly_leads_estimate = estimate
    answers.updated_at = now()
    return answers


def finish(
    session: Session,
    conversation: Conversation,
    ads_running: str | None,
    bucket: str | None,
    estimate: int | None = None,
) -> Outcome:
    """Record both answers and the outcome; status/state change with a CRM lead upsert (the caller commits)."""
    outcome = decide(ads_running, bucket)
    answers = answers_for(session, conversation)
    if ads_running in ("yes", "no"):
        answers.ads_running = ads_running
    if ads_running == "yes" and bucket:
        answers.monthly_leads_bucket = bucket
        answers.monthly_leads_estimate = estimate
    answers.qualified = outcome.qualified
    answers.reason = outcome.reason
    answers.updated_at = now()
    session.flush()
    if not set_state(session, conversation, outcome.state, outcome.status):
        # Same status (e.g. "open" for a pending volume): the CRM still needs the answers.
        _lead_upsert(session, conversation, answers)
    return outcome


@dataclass(frozen=True)
class Restored:
    """What the Rasa session start needs to continue a conversation after a new session began."""

    stage: str | None
    open_slot: str | None
    slots: dict[str, Any]
    owner: str


_STAGE_BY_STATE = {
    CONSENT_PENDING: "consent_pending",
    CONSENT_DECLINED: "declined",
    CONSENT_LATER: "declined",
    Q1_ADS_RUNNING: "questions",
    Q2_MONTHLY_LEADS: "questions",
    DISQUALIFIED_NO_ADS: "disqualified",
    DISQUALIFIED_LOW_VOLUME: "disqualified",
    QUALIFIED: "qualified",
    VOLUME_UNKNOWN: "pending",
}


def restore(session: Session, conversation: Conversation) -> Restored:
    """The dialogue position stored in our database. During a handover `current_state` still names the node where
    the lead was (the handover service records it as `resume_state` and leaves it alone)."""
    answers = session.execute(
        select(QualificationAnswer).where(QualificationAnswer.conversation_id == conversation.id)
    ).scalar_one_or_none()
    slots: dict[str, Any] = {}
    if answers is not None and answers.ads_running in ("yes", "no"):
        slots["ads_running"] = answers.ads_running
    state = conversation.current_state
    if answers is not None and (answers.monthly_leads_bucket != "unknown" or state == VOLUME_UNKNOWN):
        slots["monthly_leads"] = answers.monthly_leads_bucket
    stage = _STAGE_BY_STATE.get(state)
    if stage is None and answers is not None and answers.qualified == "true":
        stage = "qualified"  # a later feature (booking) moved the state on
    return Restored(stage=stage, open_slot=QUESTION_STATES.get(state), slots=slots, owner=conversation.owner)
