"""Issue 10 "Done means", outbound side: 1,000 contacts x bursts of 3 messages, Twilio failing 30 % of sends.

The real sender (several threads, PostgreSQL row locks) drains the queue into the recording fake, which fails
30 % of the requests with 500, 503, a hang past the client's timeout without accepting (a lost request), or a
hang past it after accepting (a lost answer). The draw is seeded per request, so the faults are the same every
run. Asserted: per contact Twilio accepted the messages in the order they were produced; no message was accepted
twice; every message ended delivered (after Twilio's status callbacks) or dead-lettered.

The client timeout is short on purpose: besides the scripted hangs, a loaded box makes the fake answer some
accepted requests after the client gave up. Every timeout is ambiguous to the sender, which looks the message up
at Twilio before it sends again (see `leadbot.sender.worker`), so 0 doubles holds for both kinds.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from leadbot.adapters.twilio_transport import TwilioTransport
from leadbot.db.models import Contact, Conversation, DeadLetter, Message
from leadbot.sender.worker import Sender
from leadbot.services import outbound
from tests.fakes.twilio_fake import AUTH_TOKEN, Fault

CONTACTS = int(os.environ.get("FAULT_CONTACTS", "1000"))  # smaller for a quick local run
BURST = 3
FAILURE_RATE = 0.3
TIMEOUT_SECONDS = 0.1


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_outbound_order_and_no_doubles_under_30_percent_failures(
    engine, session, frozen_clock, env, twilio_fake, status_receiver
) -> None:
    receiver = status_receiver(AUTH_TOKEN)
    twilio_fake.failure_rate = FAILURE_RATE
    twilio_fake.failure_faults = (
        Fault.server_error(500),
        Fault.server_error(503),
        Fault.timeout(hang_seconds=1.0),
        Fault.accepted_timeout(hang_seconds=1.0),
    )
    twilio_fake.seed = 10
    cfg = env.apply(
        TWILIO_ACCOUNT_SID=twilio_fake.account_sid,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=twilio_fake.base_url,
        TWILIO_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        SEND_MAX_ATTEMPTS="5",
        SEND_BACKOFF_BASE_SECONDS="0",  # the frozen clock would never reach a real delay
        PUBLIC_BASE_URL=receiver.base_url,
    )

    # Contacts with open service windows; bursts of 3 from all of them, interleaved, with jitter between.
    rng = random.Random(7)
    current = frozen_clock.now()
    contacts = [
        Contact(whatsapp_e164=f"+4917{n:09d}", timezone="Europe/Berlin", consent_status="granted", created_at=current)
        for n in range(CONTACTS)
    ]
    session.add_all(contacts)
    session.flush()
    conversations = [
        Conversation(
            contact_id=c.id, last_inbound_at=current, service_window_expires_at=current + timedelta(hours=23)
        )
        for c in contacts
    ]
    session.add_all(conversations)
    session.commit()
    produced: dict[str, list[str]] = defaultdict(list)
    bursts = [(conversation, burst) for conversation in conversations for burst in range(BURST)]
    rng.shuffle(bursts)
    for conversation, _ in bursts:
        text = f"{conversation.contact.whatsapp_e164} #{len(produced[conversation.contact.whatsapp_e164])}"
        assert outbound.enqueue(session, conversation, text=text).allowed
        produced[conversation.contact.whatsapp_e164].append(text)
        frozen_clock.advance(timedelta(milliseconds=rng.randint(0, 300)))
    session.commit()

    sender = Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=12)
    started = time.monotonic()
    sender.drain()
    rounds = 1
    while waiting(session) and rounds < 50:
        # Timed-out messages wait one client timeout before the lookup; real time passes too, so that a request
        # the client gave up on under load has landed at the fake.
        time.sleep(2 * TIMEOUT_SECONDS)
        frozen_clock.advance(timedelta(seconds=1))
        sender.drain()
        rounds += 1
    drained_in = time.monotonic() - started
    # Only the final callback: statuses only move forward, and it halves the test's HTTP traffic.
    callbacks = twilio_fake.deliver_status_callbacks(statuses=("delivered",))

    accepted_by_contact: dict[str, list[str]] = defaultdict(list)
    for record in twilio_fake.accepted:
        accepted_by_contact[str(record.params["To"]).removeprefix("whatsapp:")].append(str(record.params["Body"]))
    bodies = [str(r.params["Body"]) for r in twilio_fake.accepted]
    doubles = len(bodies) - len(set(bodies))
    statuses = dict(
        session.execute(select(Message.delivery_status, func.count()).group_by(Message.delivery_status)).all()
    )
    dead = {
        m.content
        for m in session.execute(
            select(Message).join(DeadLetter, DeadLetter.message_id == Message.id)
        ).scalars()
    }
    out_of_order = [
        e164 for e164, texts in produced.items() if accepted_by_contact[e164] != [t for t in texts if t not in dead]
    ]
    failed_attempts = sum(1 for a in twilio_fake.attempts if a.status != 201 or a.answered_late)
    timeouts = sum(1 for a in twilio_fake.attempts if a.status == 504 or a.answered_late)
    lost_answers = sum(1 for a in twilio_fake.attempts if a.answered_late)

    print(
        f"\nfault test: {CONTACTS} contacts x {BURST} messages = {CONTACTS * BURST} produced; "
        f"{len(twilio_fake.attempts)} requests to Twilio, {failed_attempts} failed "
        f"({failed_attempts / len(twilio_fake.attempts):.0%}; {timeouts} scripted timeouts, {lost_answers} of them "
        f"after accepting); {len(twilio_fake.lists)} lookups; "
        f"{len(twilio_fake.accepted)} accepted, {doubles} doubles, {len(dead)} dead-lettered; "
        f"statuses {statuses}; {len(out_of_order)} contacts out of order; "
        f"{callbacks.count(200)} status callbacks applied; sender drained in {drained_in:.1f} s ({rounds} rounds)"
    )
    assert doubles == 0
    assert out_of_order == []
    assert len(twilio_fake.accepted) + len(dead) == CONTACTS * BURST
    assert statuses == {"delivered": len(twilio_fake.accepted), **({"failed": len(dead)} if dead else {})}
    assert 0.25 < failed_attempts / len(twilio_fake.attempts) < 0.35


def waiting(session) -> int:
    session.expire_all()
    return session.execute(
        select(func.count())
        .select_from(Message)
        .where(Message.delivery_status == "queued", Message.provider_message_id.is_(None))
    ).scalar_one()
