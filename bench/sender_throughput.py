"""Sender throughput: messages per second handed to a Twilio-faithful recording fake, with 1 and 2 sender workers.

Twilio's default limit for one WhatsApp sender is 80 messages per second (MPS); the sender must not be the
bottleneck below that. Uses a scratch PostgreSQL database (TEST_POSTGRES_ADMIN_URL, like the tests) and loopback only.
Both workers and the fake share this one Python process (and its GIL), so "2 workers" shows that replicas do not
get in each other's way (row locks, no double sends), not the scaling of separate sender processes.

    .venv/bin/python bench/sender_throughput.py [--messages 3000] [--contacts 1000] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TWILIO_DEFAULT_MPS = 80


def run(workers: int, messages: int, contacts: int, threads: int) -> tuple[float, int]:
    from sqlalchemy.orm import Session

    from leadbot.adapters.twilio_transport import TwilioTransport
    from leadbot.clock import now
    from leadbot.config import settings
    from leadbot.db import migrate
    from leadbot.db.models import Contact, Conversation, Message
    from leadbot.db.session import create_db_engine
    from leadbot.sender.worker import Sender
    from tests.conftest import create_database, drop_database
    from tests.fakes.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, TwilioFake

    name = f"leadbot_bench_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    migrate.upgrade(url)
    engines = []
    try:
        with TwilioFake() as fake:
            os.environ.update(
                DATABASE_URL=url,
                TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                TWILIO_API_BASE_URL=fake.base_url,
                QUIET_HOURS_START="00:00",  # no quiet hours: the benchmark runs at any time of day
                QUIET_HOURS_END="00:00",
            )
            settings.cache_clear()
            cfg = settings()
            setup = create_db_engine(url)
            with Session(setup) as session:
                current = now()
                people = [Contact(whatsapp_e164=f"+4917{n:09d}", consent_status="granted") for n in range(contacts)]
                session.add_all(people)
                session.flush()
                chats = [
                    Conversation(
                        contact_id=p.id, last_inbound_at=current, service_window_expires_at=current + timedelta(hours=5)
                    )
                    for p in people
                ]
                session.add_all(chats)
                session.flush()
                session.add_all(
                    Message(
                        conversation_id=chats[n % contacts].id,
                        direction="outbound",
                        content=f"Nachricht {n}",
                        send_at=current,
                        payload_json={"purpose": "conversation"},
                    )
                    for n in range(messages)
                )
                session.commit()
            setup.dispose()
            engines = [create_db_engine(url) for _ in range(workers)]
            senders = [Sender(TwilioTransport(cfg), engine=e, cfg=cfg, threads=threads) for e in engines]
            started = time.perf_counter()
            runners = [threading.Thread(target=s.drain) for s in senders]
            for runner in runners:
                runner.start()
            for runner in runners:
                runner.join()
            elapsed = time.perf_counter() - started
            return len(fake.accepted) / elapsed, len(fake.accepted)
    finally:
        for engine in engines:
            engine.dispose()
        drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8, help="threads per sender worker")
    args = parser.parse_args()
    print(f"{args.messages} messages to {args.contacts} contacts, {args.threads} threads per worker, loopback fake")
    for workers in (1, 2):
        mps, sent = run(workers, args.messages, args.contacts, args.threads)
        print(
            f"  {workers} worker(s): {mps:7.1f} messages/s ({sent} accepted)  "
            f"= {mps / TWILIO_DEFAULT_MPS:.1f}x Twilio's default {TWILIO_DEFAULT_MPS} MPS"
        )


if __name__ == "__main__":
    main()
