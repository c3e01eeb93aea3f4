"""The sender against the recording Twilio fake: retries, dead letters, replay, error codes, order, replicas."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from leadbot.adapters.twilio_transport import TwilioTransport
from leadbot.clock import FrozenClock
from leadbot.config import Settings
from leadbot.db.models import AuditEvent, Contact, Conversation, DeadLetter, Message
from leadbot.db.session import create_db_engine
from leadbot.domain.templates import get_template
from leadbot.sender.worker import Sender
from leadbot.services import dead_letters, outbound
from tests.fakes.twilio_fake import Fault, TwilioFake
from tests.sender.conftest import EnvSettings, enqueue_texts, make_conversation, reload


def whatsapp(conversation: Conversation) -> str:
    return f"whatsapp:{conversation.contact.whatsapp_e164}"


def test_500_then_201_is_retried_once_accepted_once_and_delivered(
    engine, session, frozen_clock, env: EnvSettings, twilio_settings, twilio_fake: TwilioFake, status_receiver
) -> None:
    from tests.fakes.twilio_fake import AUTH_TOKEN

    receiver = status_receiver(AUTH_TOKEN)
    cfg = env.apply(PUBLIC_BASE_URL=receiver.base_url)
    conversation = make_conversation(session)
    [message_id] = enqueue_texts(session, conversation, "Hallo, hier ist leadbot")
    twilio_fake.script(Fault.server_error(500))

    Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=1).drain()

    assert [a.status for a in twilio_fake.attempts] == [500, 201]
    assert twilio_fake.attempts[0].params == twilio_fake.attempts[1].params  # the same request, sent again
    assert len(twilio_fake.accepted) == 1
    message = reload(session, message_id)
    assert message.provider_message_id == twilio_fake.accepted[0].sid
    assert (message.attempts, message.delivery_status, message.error_code) == (2, "queued", None)
    assert message.sent_at == frozen_clock.now()
    assert session.get(Conversation, conversation.id).last_outbound_at == frozen_clock.now()

    # Twilio's signed callbacks (to the StatusCallback we passed) move it on through the channel's logic.
    assert twilio_fake.deliver_status_callbacks() == [200, 200]
    assert reload(session, message_id).delivery_status == "delivered"


def test_request_is_what_twilio_expects(session, frozen_clock, twilio_settings: Settings, twilio_fake, engine) -> None:
    conversation = make_conversation(session)
    enqueue_texts(session, conversation, "Wie viele Leads habt ihr pro Monat?")

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1).drain()

    [request] = twilio_fake.accepted
    assert request.path == f"/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json"
    assert request.params == {
        "To": whatsapp(conversation),
        "From": "whatsapp:+14155238886",
        "Body": "Wie viele Leads habt ihr pro Monat?",
        "StatusCallback": "https://bot.example.test/webhooks/whatsapp/status",
    }


def test_template_goes_by_content_sid_and_variables(session, frozen_clock, twilio_settings, twilio_fake, engine):
    conversation = make_conversation(session, window=None)  # outside the window: only a template may go
    result = outbound.enqueue(session, conversation, template_name="lead_welcome_v1", variables={"first_name": "Max"})
    session.commit()
    assert result.allowed

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1).drain()

    [request] = twilio_fake.accepted
    assert request.params["ContentSid"] == get_template("lead_welcome_v1").content_sid
    assert json.loads(request.params["ContentVariables"]) == {"1": "Max"}
    assert "Body" not in request.params


def test_buttons_become_one_cached_quick_reply_content(session, frozen_clock, twilio_settings, twilio_fake, engine):
    buttons = [{"title": "Ja", "payload": "/affirm"}, {"title": "Nein", "payload": "/deny"}]
    conversation = make_conversation(session)
    for _ in range(2):
        outbound.enqueue(session, conversation, text="Läuft bei euch schon Werbung?", buttons=buttons)
    session.commit()

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1).drain()

    [content] = twilio_fake.contents  # created once, reused for the identical second message
    assert content.params["types"]["twilio/quick-reply"] == {
        "body": "Läuft bei euch schon Werbung?",
        "actions": [{"title": "Ja", "id": "/affirm"}, {"title": "Nein", "id": "/deny"}],
    }
    assert [r.params["ContentSid"] for r in twilio_fake.accepted] == [content.sid, content.sid]


def test_messaging_service_replaces_from(session, frozen_clock, twilio_settings, twilio_fake, engine, env) -> None:
    cfg = env.apply(TWILIO_MESSAGING_SERVICE_SID="MG" + "2" * 32)
    enqueue_texts(session, make_conversation(session), "Hallo")

    Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=1).drain()

    [request] = twilio_fake.accepted
    assert request.params["MessagingServiceSid"] == "MG" + "2" * 32
    assert "From" not in request.params


def test_permanent_error_goes_to_dead_letters_at_once(session, frozen_clock, twilio_settings, twilio_fake, engine):
    conversation = make_conversation(session)
    [first, second] = enqueue_texts(session, conversation, "eins", "zwei")
    twilio_fake.script(Fault.bad_request(21211))

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1).drain()

    message = reload(session, first)
    assert (message.delivery_status, message.error_code, message.attempts) == ("failed", "21211", 1)
    [letter] = dead_letters.list_dead_letters(session)
    assert (letter.kind, letter.message_id, letter.error_code) == ("outbound_message", first, "21211")
    assert letter.attempts == 1
    assert "not a valid phone number" in letter.reason
    # The queue moved on: the next message of the contact went out.
    assert twilio_fake.accepted_bodies() == ["zwei"]
    assert reload(session, second).provider_message_id is not None


def test_retry_budget_ends_in_a_dead_letter_and_replay_sends_it(
    session, frozen_clock, twilio_settings, twilio_fake, engine
) -> None:
    conversation = make_conversation(session)
    [message_id] = enqueue_texts(session, conversation, "Hallo")
    twilio_fake.script(Fault.server_error(503), Fault.rate_limited(), Fault.server_error(500))
    sender = Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1)

    sender.drain()

    message = reload(session, message_id)
    assert (message.delivery_status, message.attempts, message.error_code) == ("failed", 3, "20500")
    [letter] = dead_letters.list_dead_letters(session, kind="outbound_message")
    assert letter.reason.startswith("gave up after 3 attempts; last error 20500")
    assert twilio_fake.accepted == []

    dead_letters.replay(session, letter.id)
    session.commit()
    again = dead_letters.replay(session, letter.id)  # idempotent: nothing re-queued twice
    session.commit()
    assert again.replayed_at == frozen_clock.now()
    assert dead_letters.list_dead_letters(session) == []
    assert dead_letters.list_dead_letters(session, include_replayed=True) == [letter]

    sender.drain()

    message = reload(session, message_id)
    assert message.provider_message_id == twilio_fake.accepted[0].sid
    assert (message.delivery_status, message.attempts) == ("queued", 1)
    assert len(twilio_fake.accepted) == 1


def test_replay_passes_the_policy_gate_again(session, frozen_clock: FrozenClock, twilio_settings, twilio_fake, engine):
    conversation = make_conversation(session, window=timedelta(hours=1))
    [message_id] = enqueue_texts(session, conversation, "Hallo")
    twilio_fake.script(Fault.bad_request(21211))
    sender = Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1)
    sender.drain()
    [letter] = dead_letters.list_dead_letters(session)

    frozen_clock.advance(timedelta(hours=2))  # the service window closed meanwhile
    dead_letters.replay(session, letter.id)
    session.commit()
    sender.drain()

    message = reload(session, message_id)
    assert (message.delivery_status, message.error_code) == ("failed", "policy:outside_service_window")
    assert twilio_fake.accepted == []


def test_63016_outside_window_fails_without_retry_and_is_audited(
    session, frozen_clock, twilio_settings, twilio_fake, engine
) -> None:
    conversation = make_conversation(session)
    [message_id] = enqueue_texts(session, conversation, "Hallo")
    twilio_fake.script(Fault.outside_window())

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1).drain()

    message = reload(session, message_id)
    assert (message.delivery_status, message.error_code, message.attempts) == ("failed", "63016", 1)
    assert len(twilio_fake.attempts) == 1
    [event] = session.execute(select(AuditEvent).where(AuditEvent.event_type == "policy_blocked_send")).scalars()
    assert event.details_json["reason"] == "twilio_outside_service_window"
    assert event.details_json["message_id"] == message_id
    assert session.execute(select(DeadLetter)).scalars().all() == []


@pytest.mark.parametrize("fault", [Fault.unsubscribed(), Fault(status=400, code=63032, message="opted out")])
def test_opted_out_recipient_revokes_consent(session, frozen_clock, twilio_settings, twilio_fake, engine, fault):
    conversation = make_conversation(session)
    [message_id] = enqueue_texts(session, conversation, "Hallo")
    twilio_fake.script(fault)

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=1).drain()

    message = reload(session, message_id)
    assert (message.delivery_status, message.error_code) == ("failed", str(fault.code))
    contact = session.get(Contact, conversation.contact_id)
    assert (contact.consent_status, contact.consent_source) == ("revoked", "twilio_error")
    assert session.execute(select(DeadLetter)).scalars().all() == []
    assert session.execute(
        select(AuditEvent).where(AuditEvent.event_type == "consent_revoked", AuditEvent.contact_id == contact.id)
    ).scalar_one().details_json == {"source": "twilio_error"}


def test_timeout_is_honoured_and_retried(session, frozen_clock, twilio_settings, twilio_fake, engine, env) -> None:
    cfg = env.apply(TWILIO_TIMEOUT_SECONDS="0.2")
    [message_id] = enqueue_texts(session, make_conversation(session), "Hallo")
    twilio_fake.script(Fault.timeout(hang_seconds=5))

    sender = Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=1)
    sender.drain()
    # The outcome is unknown: it waits at least one more client timeout before it looks Twilio up.
    assert reload(session, message_id).next_attempt_at >= frozen_clock.now() + timedelta(seconds=0.2)
    frozen_clock.advance(timedelta(seconds=1))
    sender.drain()

    message = reload(session, message_id)
    assert message.attempts == 2 and message.provider_message_id == twilio_fake.accepted[0].sid
    # The fake saw the hanging request; the client gave up on it instead of waiting the 5 s out, found nothing
    # accepted in the list, and sent again.
    assert [a.status for a in twilio_fake.attempts] == [504, 201]
    assert len(twilio_fake.lists) == 1


def test_backoff_waits_for_next_attempt_at(session, frozen_clock, twilio_settings, twilio_fake, engine, env):
    cfg = env.apply(SEND_BACKOFF_BASE_SECONDS="60", SEND_BACKOFF_MAX_SECONDS="600")
    [message_id] = enqueue_texts(session, make_conversation(session), "Hallo")
    twilio_fake.script(Fault.rate_limited())
    sender = Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=1)

    sender.drain()
    message = reload(session, message_id)
    assert (message.attempts, message.error_code, message.provider_message_id) == (1, "20429", None)
    # Equal jitter: between half and all of the base delay for the first retry.
    assert frozen_clock.now() + timedelta(seconds=30) <= message.next_attempt_at <= frozen_clock.now() + timedelta(
        seconds=60
    )
    assert sender.drain() == 0  # not due yet

    frozen_clock.set(message.next_attempt_at)
    sender.drain()
    assert reload(session, message_id).provider_message_id == twilio_fake.accepted[0].sid


def test_retrying_head_holds_its_contact_but_not_others(
    session, frozen_clock: FrozenClock, twilio_settings, twilio_fake, engine, env
) -> None:
    cfg = env.apply(SEND_BACKOFF_BASE_SECONDS="60")
    slow, other = make_conversation(session), make_conversation(session)
    enqueue_texts(session, slow, "A1", "A2", "A3")
    enqueue_texts(session, other, "B1", "B2")
    twilio_fake.script_for(slow.contact.whatsapp_e164, Fault.server_error(503))
    sender = Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=4)

    sender.drain()
    assert twilio_fake.accepted_bodies(slow.contact.whatsapp_e164) == []
    assert twilio_fake.accepted_bodies(other.contact.whatsapp_e164) == ["B1", "B2"]

    frozen_clock.advance(timedelta(minutes=5))
    sender.drain()
    assert twilio_fake.accepted_bodies(slow.contact.whatsapp_e164) == ["A1", "A2", "A3"]


def test_policy_is_checked_again_at_send_time(session, frozen_clock: FrozenClock, twilio_settings, twilio_fake, engine):
    closing, handed_over = make_conversation(session, window=timedelta(minutes=10)), make_conversation(session)
    [late] = enqueue_texts(session, closing, "kommt zu spät")
    [template_id] = [
        outbound.enqueue(session, closing, template_name="lead_nudge_v1").message_id,
    ]
    [bot_reply] = enqueue_texts(session, handed_over, "Bot-Antwort")
    session.commit()
    frozen_clock.advance(timedelta(minutes=15))  # the window closes before the sender runs
    handed_over.owner = "human"  # and a human took the other conversation over
    session.commit()

    Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=2).drain()

    assert (reload(session, late).delivery_status, reload(session, late).error_code) == (
        "failed",
        "policy:outside_service_window",
    )
    assert reload(session, bot_reply).error_code == "policy:human_owns_conversation"
    # The template behind the blocked message still goes: the queue moves on.
    assert reload(session, template_id).provider_message_id is not None
    reasons = sorted(
        e.details_json["reason"]
        for e in session.execute(select(AuditEvent).where(AuditEvent.event_type == "policy_blocked_send")).scalars()
    )
    assert reasons == ["human_owns_conversation", "outside_service_window"]


def test_deferred_message_keeps_its_place(session, frozen_clock: FrozenClock, twilio_settings, twilio_fake, engine):
    """Issue 10 point 5: quiet hours start while a message waits; the later one waits behind it."""
    frozen_clock.set(datetime(2026, 11, 25, 21, 50, tzinfo=timezone.utc))  # 22:50 in Berlin
    conversation = make_conversation(session)
    [first] = enqueue_texts(session, conversation, "erste")
    frozen_clock.advance(timedelta(minutes=5))
    [second] = enqueue_texts(session, conversation, "zweite")
    frozen_clock.set(datetime(2026, 11, 25, 22, 5, tzinfo=timezone.utc))  # 23:05: quiet hours, both overdue
    sender = Sender(TwilioTransport(twilio_settings), engine=engine, cfg=twilio_settings, threads=4)

    sender.drain()

    seven_local = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)  # 07:00 in Berlin
    assert reload(session, first).send_at == seven_local
    assert reload(session, second).send_at < seven_local  # due, but not the head: it waits
    assert twilio_fake.attempts == []

    frozen_clock.set(seven_local)
    sender.drain()
    assert twilio_fake.accepted_bodies() == ["erste", "zweite"]


def test_two_replicas_on_postgres_never_send_twice_and_keep_order(
    session, frozen_clock, twilio_settings, twilio_fake, database_url
) -> None:
    twilio_fake.latency_seconds = 0.01  # keep sends in flight long enough for the replicas to collide
    twilio_fake.failure_rate = 0.2
    produced: dict[str, list[str]] = {}
    for index in range(40):
        conversation = make_conversation(session)
        texts = [f"k{index}-m{n}" for n in range(4)]
        enqueue_texts(session, conversation, *texts)
        produced[conversation.contact.whatsapp_e164] = texts
    engines = [create_db_engine(database_url) for _ in range(2)]
    replicas = [Sender(TwilioTransport(twilio_settings), engine=e, cfg=twilio_settings, threads=4) for e in engines]

    threads = [threading.Thread(target=replica.drain) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    bodies = twilio_fake.accepted_bodies()
    assert len(bodies) == len(set(bodies)), "a message was handed to Twilio twice"
    for e164, texts in produced.items():
        accepted = twilio_fake.accepted_bodies(e164)
        failed = {
            m.content
            for m in session.execute(select(Message).where(Message.delivery_status == "failed")).scalars()
        }
        assert accepted == [t for t in texts if t not in failed]
    for engine in engines:
        engine.dispose()
