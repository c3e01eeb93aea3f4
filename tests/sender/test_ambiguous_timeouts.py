"""Ambiguous sends: a request times out after it was written, so Twilio may or may not have accepted the message.

The sender marks the message (`payload_json["ambiguous_since"]`), waits one more client timeout, and lists the
recipient's messages at the Twilio fake before it sends again: a match is adopted, no match is sent again, a
failing list backs off without sending. The fake implements the list endpoint like Twilio (filters, paging,
basic auth), so these tests run the real transport over HTTP.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from leadbot.adapters.twilio_transport import OutboundMessage, SandboxTransport, TwilioTransport
from leadbot.clock import FrozenClock
from leadbot.config import Settings
from leadbot.db.models import DeadLetter
from leadbot.sender.worker import Sender
from leadbot.services import outbound
from tests.fakes.twilio_fake import AUTH_TOKEN, Fault, TwilioFake
from tests.sender.conftest import EnvSettings, enqueue_texts, make_conversation, reload

TIMEOUT = 0.2  # the client's Twilio timeout in these tests; the faults hang far longer




def sender_for(cfg: Settings, engine) -> Sender:
    return Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=1)


def drain_past_timeout(sender: Sender, clock: FrozenClock) -> None:
    """Send, then let the clock pass the extra client timeout an ambiguous message waits, and go on."""
    sender.drain()
    clock.advance(timedelta(seconds=1))
    sender.drain()


def settings_for(env: EnvSettings, **extra: str) -> Settings:
    return env.apply(TWILIO_TIMEOUT_SECONDS=str(TIMEOUT), **extra)


def test_accepted_then_timed_out_is_adopted_not_sent_twice(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env)
    conversation = make_conversation(session)
    [message_id] = enqueue_texts(session, conversation, "Wie viele Leads habt ihr pro Monat?")
    twilio_fake.script(Fault.accepted_timeout(hang_seconds=5))
    sender = sender_for(cfg, engine)

    sender.drain()
    waiting = reload(session, message_id)
    assert (waiting.provider_message_id, waiting.error_code, waiting.attempts) == (None, "timeout", 1)
    assert waiting.payload_json["ambiguous_since"] == frozen_clock.now().isoformat()
    assert sender.drain() == 0  # it waits one more client timeout before it looks

    frozen_clock.advance(timedelta(seconds=1))
    sender.drain()

    [accepted] = twilio_fake.accepted
    assert len(twilio_fake.attempts) == 1  # Twilio saw one create: nothing was sent twice
    message = reload(session, message_id)
    assert message.provider_message_id == accepted.sid
    assert (message.delivery_status, message.error_code, message.attempts) == ("queued", None, 1)
    assert message.sent_at == frozen_clock.now()
    [lookup] = twilio_fake.lists
    assert lookup.params["To"] == f"whatsapp:{conversation.contact.whatsapp_e164}"
    assert lookup.params["From"] == "whatsapp:+14155238886"
    assert "DateSent>" not in lookup.params  # a queued message has no date_sent: the filter would hide it
    assert sender.drain() == 0


def test_not_accepted_then_timed_out_is_sent_again_once(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env)
    [message_id] = enqueue_texts(session, make_conversation(session), "Hallo")
    twilio_fake.script(Fault.timeout(hang_seconds=5))

    drain_past_timeout(sender_for(cfg, engine), frozen_clock)

    assert [a.status for a in twilio_fake.attempts] == [504, 201]
    [accepted] = twilio_fake.accepted
    message = reload(session, message_id)
    assert (message.provider_message_id, message.attempts) == (accepted.sid, 2)
    assert len(twilio_fake.lists) == 1


def test_failing_lookup_backs_off_without_sending(
    session, frozen_clock: FrozenClock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env, SEND_BACKOFF_BASE_SECONDS="60", SEND_MAX_ATTEMPTS="5")
    [message_id] = enqueue_texts(session, make_conversation(session), "Hallo")
    twilio_fake.script(Fault.timeout(hang_seconds=5))
    twilio_fake.script_list(Fault.server_error(503), Fault.timeout(hang_seconds=5))
    sender = sender_for(cfg, engine)

    sender.drain()
    frozen_clock.set(reload(session, message_id).next_attempt_at)
    sender.drain()  # the list answers 503: no send, another backoff
    message = reload(session, message_id)
    assert len(twilio_fake.attempts) == 1
    assert (message.error_code, message.attempts, message.provider_message_id) == ("lookup:http_503", 2, None)
    assert message.next_attempt_at >= frozen_clock.now() + timedelta(seconds=30)

    frozen_clock.set(message.next_attempt_at)
    sender.drain()  # the list times out: still no send
    assert len(twilio_fake.attempts) == 1
    assert reload(session, message_id).error_code == "lookup:timeout"

    frozen_clock.set(reload(session, message_id).next_attempt_at)
    sender.drain()  # the list answers: nothing accepted, so it is sent (once)
    assert [a.status for a in twilio_fake.attempts] == [504, 201]
    assert reload(session, message_id).provider_message_id == twilio_fake.accepted[0].sid
    assert len(twilio_fake.lists) == 3


def test_template_is_matched_by_its_rendered_text(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env)
    conversation = make_conversation(session, window=None)  # outside the window: a template
    result = outbound.enqueue(session, conversation, template_name="lead_welcome_v1", variables={"first_name": "Max"})
    session.commit()
    twilio_fake.script(Fault.accepted_timeout(hang_seconds=5))

    drain_past_timeout(sender_for(cfg, engine), frozen_clock)

    [accepted] = twilio_fake.accepted
    assert accepted.resource["body"].startswith("Hey Max, danke für deine Anfrage")
    assert len(twilio_fake.attempts) == 1
    assert reload(session, result.message_id).provider_message_id == accepted.sid


def test_an_earlier_message_with_the_same_text_is_not_taken_for_the_lost_one(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env)
    conversation = make_conversation(session)
    [first, second] = enqueue_texts(session, conversation, "Passt dir morgen?", "Passt dir morgen?")
    twilio_fake.script(None, Fault.timeout(hang_seconds=5))  # the first goes through, the second is lost

    drain_past_timeout(sender_for(cfg, engine), frozen_clock)

    # The lookup saw the first one (same text, same minute) but its SID is ours already: the second went again.
    assert [a.status for a in twilio_fake.attempts] == [201, 504, 201]
    sids = [reload(session, first).provider_message_id, reload(session, second).provider_message_id]
    assert sids == [r.sid for r in twilio_fake.accepted]


def test_status_is_taken_from_twilio_when_its_callbacks_came_before_the_lookup(
    session, frozen_clock, twilio_fake: TwilioFake, engine, env, status_receiver, twilio_settings
) -> None:
    receiver = status_receiver(AUTH_TOKEN)
    cfg = settings_for(env, PUBLIC_BASE_URL=receiver.base_url)
    [message_id] = enqueue_texts(session, make_conversation(session), "Hallo")
    twilio_fake.script(Fault.accepted_timeout(hang_seconds=5))
    sender = sender_for(cfg, engine)

    sender.drain()
    # Twilio delivers while no row holds the SID: the channel finds nothing to update.
    assert twilio_fake.deliver_status_callbacks() == [200, 200]
    assert reload(session, message_id).delivery_status == "queued"
    frozen_clock.advance(timedelta(seconds=1))
    sender.drain()

    message = reload(session, message_id)
    assert (message.provider_message_id, message.delivery_status) == (twilio_fake.accepted[0].sid, "delivered")
    assert len(twilio_fake.attempts) == 1


def test_with_a_messaging_service_the_lookup_matches_the_service(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    service = "MG" + "2" * 32
    cfg = settings_for(env, TWILIO_MESSAGING_SERVICE_SID=service)
    [message_id] = enqueue_texts(session, make_conversation(session), "Hallo")
    twilio_fake.script(Fault.accepted_timeout(hang_seconds=5))

    drain_past_timeout(sender_for(cfg, engine), frozen_clock)

    [lookup] = twilio_fake.lists
    assert "From" not in lookup.params  # `from` is only known once Twilio picked a sender of the service
    assert reload(session, message_id).provider_message_id == twilio_fake.accepted[0].sid
    assert len(twilio_fake.attempts) == 1


def test_out_of_budget_after_an_ambiguous_attempt_is_looked_up_before_it_is_dead_lettered(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env)  # three attempts
    accepted_last, lost_last = make_conversation(session), make_conversation(session)
    [adopted_id] = enqueue_texts(session, accepted_last, "eins")
    [dead_id] = enqueue_texts(session, lost_last, "zwei")
    twilio_fake.script_for(
        accepted_last.contact.whatsapp_e164, Fault.server_error(500), Fault.server_error(503), Fault.accepted_timeout(5)
    )
    twilio_fake.script_for(
        lost_last.contact.whatsapp_e164, Fault.server_error(500), Fault.server_error(503), Fault.timeout(5)
    )

    drain_past_timeout(sender_for(cfg, engine), frozen_clock)

    adopted = reload(session, adopted_id)
    assert (adopted.provider_message_id, adopted.attempts) == (twilio_fake.accepted[0].sid, 3)
    dead = reload(session, dead_id)
    assert (dead.delivery_status, dead.error_code, dead.attempts) == ("failed", "timeout", 3)
    [letter] = session.execute(select(DeadLetter)).scalars()
    assert letter.message_id == dead_id
    assert "none of them was accepted" in letter.reason
    assert len(twilio_fake.attempts) == 6  # three each, none more


def test_a_refused_connection_is_not_ambiguous(session, frozen_clock, twilio_settings, env) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    cfg = env.apply(TWILIO_API_BASE_URL=closed)

    result = TwilioTransport(cfg).send(OutboundMessage(message_id=1, to="+4915100000001", body="Hallo"))

    assert result.error is not None and result.error.code == "connection"
    assert not result.error.ambiguous  # nothing reached Twilio: a plain retry is safe


def test_sandbox_has_nothing_ambiguous(env) -> None:
    cfg = env.unset("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
    message = OutboundMessage(message_id=1, to="+4915100000001", body="Hallo")
    lookup = SandboxTransport(cfg).find_accepted(message, datetime.fromisoformat("2026-11-25T09:00:00+00:00"))
    assert (lookup.matches, lookup.error) == ((), None)


def test_fake_lists_messages_like_twilio(
    session, frozen_clock: FrozenClock, twilio_settings, twilio_fake, engine, env, status_receiver
) -> None:
    """The list endpoint the lookup relies on: basic auth, filters, newest first, page shape, DateSent on date_sent."""
    cfg = env.apply(PUBLIC_BASE_URL=status_receiver(AUTH_TOKEN).base_url)
    conversation, other = make_conversation(session), make_conversation(session)
    enqueue_texts(session, conversation, "eins", "zwei", "drei")
    enqueue_texts(session, other, "anderer")
    sender_for(cfg, engine).drain()
    path = f"/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json"
    to = f"whatsapp:{conversation.contact.whatsapp_e164}"

    with httpx.Client(base_url=twilio_fake.base_url, auth=(twilio_fake.account_sid, AUTH_TOKEN)) as http:
        assert httpx.get(twilio_fake.base_url + path).json()["code"] == 20003  # no credentials: 401
        first = http.get(path, params={"To": to, "PageSize": 2}).json()
        assert [m["body"] for m in first["messages"]] == ["drei", "zwei"]
        assert (first["page"], first["page_size"], first["previous_page_uri"]) == (0, 2, None)
        second = http.get(first["next_page_uri"]).json()
        assert [m["body"] for m in second["messages"]] == ["eins"]
        assert (second["page"], second["next_page_uri"]) == (1, None)
        assert [m["to"] for m in http.get(path).json()["messages"]].count(to) == 3
        # Not sent yet: no date_sent, so no DateSent filter matches; once sent, it does.
        day = frozen_clock.now().date().isoformat()
        assert http.get(path, params={"To": to, "DateSent>": day}).json()["messages"] == []
        twilio_fake.deliver_status_callbacks(statuses=("sent",))
        sent = http.get(path, params={"To": to, "DateSent>": day}).json()["messages"]
        assert [(m["status"], m["date_sent"] is not None) for m in sent] == [("sent", True)] * 3
        assert http.get(path, params={"To": to, "DateSent<": "2026-11-24"}).json()["messages"] == []
        assert http.get(path, params={"PageSize": 0}).status_code == 400
        assert json.loads(http.get(path, params={"From": "whatsapp:+10000000000"}).text)["messages"] == []


def test_an_accepted_message_is_adopted_even_if_the_gate_would_block_it_now(
    session, frozen_clock, twilio_settings, twilio_fake: TwilioFake, engine, env
) -> None:
    cfg = settings_for(env)
    conversation = make_conversation(session)
    [message_id] = enqueue_texts(session, conversation, "Hallo")
    twilio_fake.script(Fault.accepted_timeout(hang_seconds=5))
    sender = sender_for(cfg, engine)
    sender.drain()
    conversation.owner = "human"  # a human took over while the outcome was unknown
    session.commit()

    frozen_clock.advance(timedelta(seconds=1))
    sender.drain()

    # The lead has the message: the row says so, not "blocked by the policy".
    message = reload(session, message_id)
    assert (message.provider_message_id, message.error_code) == (twilio_fake.accepted[0].sid, None)
