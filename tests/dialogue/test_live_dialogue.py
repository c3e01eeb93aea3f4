"""The qualification dialogue live: a Rasa server with our model, the action server on the test database.

Unlike the test stories (`rasa test` predicts actions but does not run them) these conversations execute the
actions: the German parsers in the form, the texts the lead reads, and what lands in PostgreSQL
(qualification_answers, conversations, handovers, audit events, the CRM outbox).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actions import handover as handover_actions
from actions import knowledge as knowledge_actions
from actions import qualification as texts
from leadbot.db.models import AuditEvent, Conversation, CrmOutbox, Handover, QualificationAnswer, TaskScheduled
from leadbot.phone import sender_id_for
from leadbot.services import handover as handover_service
from leadbot.services import qualification

pytestmark = pytest.mark.timeout(1800)


class Lead:
    """One lead talking to the bot through Rasa's REST channel and the trigger_intent API."""

    def __init__(self, rasa_url: str, e164: str) -> None:
        self.rasa_url = rasa_url
        self.sender = sender_id_for(e164)

    def says(self, text: str) -> list[dict[str, Any]]:
        response = httpx.post(
            f"{self.rasa_url}/webhooks/rest/webhook", json={"sender": self.sender, "message": text}, timeout=120
        )
        response.raise_for_status()
        return response.json()

    def trigger(self, intent: str) -> list[dict[str, Any]]:
        response = httpx.post(
            f"{self.rasa_url}/conversations/{self.sender}/trigger_intent",
            params={"output_channel": "latest"},
            json={"name": intent, "entities": {}},
            timeout=120,
        )
        response.raise_for_status()
        return response.json().get("messages", [])


def texts_of(messages: list[dict[str, Any]]) -> list[str]:
    return [message["text"] for message in messages if "text" in message]


def conversation_of(engine: Engine, lead: Lead) -> tuple[Conversation, QualificationAnswer | None]:
    with Session(engine, expire_on_commit=False) as session:
        conversation = qualification.conversation_for_sender(session, lead.sender)
        session.commit()
        answers = session.execute(
            select(QualificationAnswer).where(QualificationAnswer.conversation_id == conversation.id)
        ).scalar_one_or_none()
        return conversation, answers


@pytest.fixture
def lead(rasa_server: str, engine: Engine, request: pytest.FixtureRequest) -> Lead:
    # A distinct valid German mobile number per test keeps the Rasa trackers apart.
    number = 10_000_000 + abs(hash(request.node.name)) % 89_999_999
    return Lead(rasa_server, f"+49151{number}")


def start_questions(lead: Lead) -> None:
    assert texts_of(lead.says("Hallo")) == [texts.WELCOME_TEXT.format(name="")]
    assert texts_of(lead.says("Ja, passt")) == [texts.CONSENT_THANKS, texts.Q1]


def test_welcome_template_then_qualified(lead: Lead, engine: Engine) -> None:
    [welcome] = lead.trigger("EXTERNAL_welcome")
    assert welcome["custom"]["template"] == "lead_welcome_v1"
    assert welcome["custom"]["purpose"] == "marketing"
    assert texts_of(lead.says("jo klar 👍")) == [texts.CONSENT_THANKS, texts.Q1]
    assert texts_of(lead.says("ja, Meta und Google")) == [texts.Q2]
    qualified, offer = lead.says("so um die 150 im Monat")
    assert qualified["text"] == texts.QUALIFIED
    assert offer["text"].startswith("Super! Hier sind 2 Terminvorschläge")  # the booking feature takes over
    assert len(offer["buttons"]) == 3

    conversation, answers = conversation_of(engine, lead)
    assert conversation.status == "qualified"
    assert (answers.ads_running, answers.monthly_leads_bucket, answers.qualified) == ("yes", "100-300", "true")
    assert answers.monthly_leads_estimate == 150
    with Session(engine) as session:
        upserts = session.execute(select(CrmOutbox).where(CrmOutbox.operation == "lead_upsert")).scalars().all()
    assert [row.payload_json["status"] for row in upserts] == ["qualified"]
    with Session(engine) as session:
        followups = session.execute(select(TaskScheduled.task_type).order_by(TaskScheduled.id)).scalars().all()
    assert followups == ["followup_24h", "followup_48h"]  # if no slot is picked


def test_no_ads_is_disqualified_friendly(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("nee, wir haben pausiert")) == [texts.DISQUALIFIED_NO_ADS, texts.DISQUALIFIED_NO_ADS_END]
    conversation, answers = conversation_of(engine, lead)
    assert (conversation.status, answers.ads_running, answers.reason) == ("disqualified", "no", "no_ads")


def test_low_volume_in_words_is_disqualified(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    lead.says("ja, Insta Ads")
    assert texts_of(lead.says("knapp hundert")) == [texts.DISQUALIFIED_LOW_VOLUME]
    _, answers = conversation_of(engine, lead)
    assert (answers.monthly_leads_bucket, answers.qualified) == ("<100", "false")


def test_unknown_volume_is_asked_once_more_then_pending(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    lead.says("ja")
    assert texts_of(lead.says("keine Ahnung")) == [texts.Q2_UNKNOWN_ONCE_MORE]
    assert texts_of(lead.says("weiß ich echt nicht"))[0] == texts.VOLUME_UNKNOWN
    conversation, answers = conversation_of(engine, lead)
    assert (conversation.status, answers.qualified, answers.reason) == ("open", "pending", "volume_unknown")


def test_busy_during_the_questions_is_later_not_an_answer_and_gets_one_reminder(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    # To Q1 "Schaltest du aktuell Ads?": busy, not "no ads" (which would disqualify the lead).
    assert texts_of(lead.says("passt gerade nicht")) == [texts.LATER_IN_FORM]
    conversation, answers = conversation_of(engine, lead)
    assert conversation.current_state == "q1_ads_running"
    assert answers is None or answers.ads_running == "unknown"
    assert texts_of(lead.says("ja, Google Ads")) == [texts.Q2]
    # To Q2: "keine Zeit" is not "keine Leads".
    assert texts_of(lead.says("hab grad keine Zeit")) == [texts.LATER_IN_FORM]
    conversation, answers = conversation_of(engine, lead)
    assert (conversation.current_state, answers.monthly_leads_bucket, answers.qualified) == (
        "q2_monthly_leads", "unknown", "pending"
    )
    with Session(engine) as session:
        reminders = session.execute(select(TaskScheduled).where(TaskScheduled.status == "pending")).scalars().all()
    # One reminder (the second "später" replaced the first), after the follow-up delay instead of 30 minutes,
    # pushed out of quiet hours if it falls into them. (A reply cancels it in the WhatsApp channel, tests/scheduler.)
    [reminder] = reminders
    assert reminder.task_type == "nudge_30m"
    assert reminder.run_at - reminder.created_at >= timedelta(hours=24)
    assert texts_of(lead.says("so 200 im Monat"))[0] == texts.QUALIFIED


def test_consent_later_is_respected(lead: Lead, engine: Engine) -> None:
    lead.says("Hallo")
    assert texts_of(lead.says("gerade schlecht, lieber später")) == [texts.CONSENT_LATER]
    conversation, answers = conversation_of(engine, lead)
    assert (conversation.current_state, answers) == ("consent_later", None)
    with Session(engine) as session:
        assert session.execute(select(TaskScheduled.task_type)).scalar_one() == "followup_24h"


@pytest.mark.parametrize(
    ("text", "intent"),
    # Regional words that occur only in the lookup tables of data/nlu/common.yml, in no training sentence.
    [("Salü", "greet"), ("Grias di", "greet"), ("hoi", "greet")],
)
def test_a_lookup_table_word_is_understood_not_taken_for_gibberish(rasa_server: str, text: str, intent: str) -> None:
    parsed = httpx.post(f"{rasa_server}/model/parse", json={"text": text}, timeout=60).json()
    assert parsed["intent"]["name"] == intent


def test_misunderstanding_gets_a_hint_and_the_third_hands_over(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("blubb")) == [texts.Q1_HINT]
    assert texts_of(lead.says("hmm xyz")) == [texts.Q1_HINT]
    assert texts_of(lead.says("qwertz")) == []  # the handover service tells the lead (outbound queue)
    conversation, _ = conversation_of(engine, lead)
    assert (conversation.owner, conversation.status) == ("human", "handover")
    with Session(engine) as session:
        handover = session.execute(select(Handover)).scalar_one()
        audit = session.execute(select(AuditEvent).where(AuditEvent.event_type == "handover")).scalar_one()
    assert (handover.reason, handover.resume_state) == ("misunderstandings", "q1_ads_running")
    assert audit.details_json["reason"] == "misunderstandings"


def test_handover_keyword_then_hand_back_resumes_at_q2(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("jap, Google Ads")) == [texts.Q2]
    assert texts_of(lead.says("Kann mich ein Berater anrufen?")) == []
    conversation, _ = conversation_of(engine, lead)
    assert conversation.owner == "human"
    with Session(engine) as session:
        assert session.execute(select(Handover.reason)).scalar_one() == "keyword"
        handed = session.get(Conversation, conversation.id)
        handover_service.hand_back(session, handed)
        session.commit()

    assert texts_of(lead.trigger("EXTERNAL_resume")) == [handover_actions.RESUME_QUESTIONS, texts.Q2]
    assert texts_of(lead.says("über 300"))[0] == texts.QUALIFIED


def test_negative_sentiment_hands_over(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("Was soll der Scheiß, ihr nervt total!")) == []
    with Session(engine) as session:
        assert session.execute(select(Handover.reason)).scalar_one() == "negative_sentiment"


def test_mid_flow_question_is_answered_then_the_open_question_is_asked_again(lead: Lead) -> None:
    start_questions(lead)
    answer, question = texts_of(lead.says("Was kostet das eigentlich?"))
    assert "Quelle:" in answer
    assert question == texts.BACK_TO_QUESTION + texts.Q1
    assert texts_of(lead.says("ja, auf Instagram")) == [texts.Q2]


def test_question_at_the_consent_step_re_asks_passt_das(lead: Lead) -> None:
    lead.says("Hallo")
    answer, question = texts_of(lead.says("Was kostet das eigentlich?"))
    assert "Quelle:" in answer
    assert question == knowledge_actions.CONSENT_REASK


def test_individual_contract_terms_hand_over(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("Können wir individuelle Konditionen im Vertrag vereinbaren?")) == []
    with Session(engine) as session:
        assert session.execute(select(Handover.reason)).scalar_one() == "contract_uncertainty"


def test_opt_out_mid_flow_revokes_consent(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("STOP")) == []  # the consent service queues the confirmation itself
    conversation, _ = conversation_of(engine, lead)
    with Session(engine) as session:
        contact = session.get(Conversation, conversation.id).contact
        assert contact.consent_status == "revoked"


def test_new_session_restores_the_open_question_from_the_database(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    assert texts_of(lead.says("ja, Google")) == [texts.Q2]
    lead.says("/session_start")  # what an expired session does before the next message
    assert texts_of(lead.says("so 200 im Monat"))[0] == texts.QUALIFIED


def test_ads_answer_to_passt_das_skips_q1(lead: Lead, engine: Engine) -> None:
    lead.says("Hallo")
    assert texts_of(lead.says("Ja klar, wir schalten Google Ads")) == [texts.CONSENT_THANKS, texts.Q2]


def test_no_ads_answer_to_passt_das_disqualifies_right_away(lead: Lead, engine: Engine) -> None:
    lead.says("Hallo")
    replies = texts_of(lead.says("Wir schalten gar keine Werbung"))
    assert replies == [texts.CONSENT_THANKS, texts.DISQUALIFIED_NO_ADS, texts.DISQUALIFIED_NO_ADS_END]
    conversation, answers = conversation_of(engine, lead)
    assert (conversation.status, answers.reason) == ("disqualified", "no_ads")


def test_hand_back_without_resume_trigger_continues_at_the_lead_s_next_answer(lead: Lead, engine: Engine) -> None:
    start_questions(lead)
    lead.says("jap, Meta")
    lead.says("Ich will mit einem Menschen sprechen")
    conversation, _ = conversation_of(engine, lead)
    with Session(engine) as session:
        handover_service.hand_back(session, session.get(Conversation, conversation.id))
        session.commit()
    # No EXTERNAL_resume reached Rasa; the lead simply answers the open question.
    assert texts_of(lead.says("so 250 im Monat"))[0] == texts.QUALIFIED
    _, answers = conversation_of(engine, lead)
    assert (answers.monthly_leads_bucket, answers.monthly_leads_estimate, answers.qualified) == ("100-300", 250, "true")
