"""Without Twilio credentials the sender uses the sandbox outbox, which plays Twilio's signed status callbacks."""

from __future__ import annotations

from sqlalchemy import select

from leadbot.adapters.twilio_transport import SandboxTransport, build_transport
from leadbot.db.models import Message
from leadbot.sender.worker import Sender
from leadbot.services import outbound
from tests.sender.conftest import make_conversation

SANDBOX_TOKEN = "sandbox-token-for-tests"


def test_sandbox_accepts_and_posts_signed_callbacks(engine, session, frozen_clock, env, status_receiver) -> None:
    receiver = status_receiver(SANDBOX_TOKEN)
    cfg = env.apply(PUBLIC_BASE_URL=receiver.base_url, TWILIO_SANDBOX_AUTH_TOKEN=SANDBOX_TOKEN)
    cfg = env.unset("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
    transport = build_transport(cfg)
    assert isinstance(transport, SandboxTransport)
    conversation = make_conversation(session)
    message_id = outbound.enqueue(session, conversation, text="Hallo aus der Sandbox").message_id
    session.commit()

    Sender(transport, engine=engine, cfg=cfg, threads=1).drain()
    assert transport.flush(timeout=10)

    session.expire_all()
    message = session.execute(select(Message).where(Message.id == message_id)).scalar_one()
    assert message.provider_message_id.startswith("SM") and len(message.provider_message_id) == 34
    assert [(form["MessageSid"], form["MessageStatus"], valid) for form, valid in receiver.received] == [
        (message.provider_message_id, "sent", True),
        (message.provider_message_id, "delivered", True),
    ]
    assert receiver.received[0][0]["To"] == f"whatsapp:{conversation.contact.whatsapp_e164}"
    assert message.delivery_status == "delivered"  # applied by the channel's status logic
    [record] = transport.outbox
    assert record.message.body == "Hallo aus der Sandbox"


def test_sandbox_callback_failure_is_not_fatal(engine, session, frozen_clock, env) -> None:
    cfg = env.apply(PUBLIC_BASE_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    cfg = env.unset("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
    transport = SandboxTransport(cfg)
    message_id = outbound.enqueue(session, make_conversation(session), text="Hallo").message_id
    session.commit()

    Sender(transport, engine=engine, cfg=cfg, threads=1).drain()
    assert transport.flush(timeout=10)

    session.expire_all()
    assert session.get(Message, message_id).provider_message_id == transport.outbox[0].sid
    assert transport.outbox[0].callbacks == [("sent", None), ("delivered", None)]
