"""Issue 10, "Done means", first bullet: the fault test across the whole chain.

Leads send bursts of three WhatsApp messages as signed Twilio webhooks (random 0-300 ms between a burst's
messages, leads interleaved, a bounded number of concurrent HTTP clients, ~5 % of the webhooks redelivered with
the same MessageSid) to a real `rasa run` with our channel. The tiny channel-test bot answers each message with a
reply that names it. The real sender worker (several threads) drains the outbound queue into the recording
Twilio fake, which fails 30 % of the sends with 500, 503 or a hang past the client's timeout.

Asserted and printed: every inbound message persisted once (0 lost), one Rasa turn and one reply per inbound
message (0 doubled), per contact Twilio accepted the replies in the order they were produced, which is the lead's
order, and every reply was accepted by Twilio or dead-lettered (0 lost).

`FAULT_CHAIN_CONTACTS` sets the number of leads (default 1,000: 2 to 2.5 minutes on a busy 2-core box).
Everything is on loopback; every wait has a deadline.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from leadbot import clock
from leadbot.adapters.twilio_transport import TwilioTransport
from leadbot.config import settings
from leadbot.db import migrate
from leadbot.db.session import create_db_engine
from leadbot.sender.worker import Sender
from tests.channel.conftest import AUTH_TOKEN, REDIS_BASE, RasaServer, start_rasa, train_bot_model, wait_until
from tests.conftest import create_database, drop_database
from tests.e2e.fault_helpers import (
    clear_stale_locks,
    collect_figures,
    inbound_progress,
    make_plan,
    outbound_waiting,
    run_load,
    write_daytime_offset,
)
from tests.fakes.twilio_fake import ACCOUNT_SID, Fault, TwilioFake
from tests.fakes.twilio_fake import AUTH_TOKEN as TWILIO_FAKE_TOKEN

CONTACTS = int(os.environ.get("FAULT_CHAIN_CONTACTS", "1000"))
FAILURE_RATE = 0.3
HTTP_CLIENTS = 16
SENDER_THREADS = 12
# The sender's Twilio timeout, and how long a "timeout" fault hangs. The timeout is far above what an accepted
# request takes even on a loaded 2-core box (the fake, the sender and the load generator share this process); a
# 201 that arrives after the client gave up would be found by the sender's lookup and not sent again (see the worker).
TWILIO_TIMEOUT_SECONDS = 2.0
HANG_SECONDS = 2.5
# Leads start over this many seconds per 100 contacts: faster than the bot can answer, so turns queue up.
RAMP_SECONDS_PER_100 = 2.0
# A Redis database of its own: the channel tests flush theirs at session start (possibly in another process).
REDIS_DB = int(os.environ.get("LEADBOT_FAULT_REDIS_DB", "13"))
# Unreachable on purpose: the bot's rules only use responses, never the action server.
NO_ACTION_SERVER = "http://127.0.0.1:9/webhook"


@dataclasses.dataclass
class Chain:
    rasa: RasaServer
    tracker: sa.engine.Engine  # Rasa's tracker database: one user event per turn
    engine: sa.engine.Engine  # our database, this test's alone: its counts are the chain's, nothing else's


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    """A real Rasa with our channel on a database of its own, its own tracker database, and a daytime clock.

    Its own database: the suite's shared test database may still hold rows of earlier modules (full-system tests
    do not truncate), and this test counts every inbound and outbound row."""
    clock_file = tmp_path / "clock_offset"
    write_daytime_offset(clock_file)
    database_name = f"leadbot_fault_{uuid.uuid4().hex[:10]}"
    database_url = create_database(database_name)
    migrate.upgrade(database_url)
    engine = create_db_engine(database_url)
    tracker_name = f"leadbot_fault_tracker_{uuid.uuid4().hex[:10]}"
    tracker_url = create_database(tracker_name)
    redis_url = f"{REDIS_BASE}/{REDIS_DB}"
    clear_stale_locks(redis_url)
    tracker = sa.create_engine(tracker_url, future=True)
    rasa: RasaServer | None = None
    try:
        rasa = start_rasa(
            "fault-chain",
            model=train_bot_model(),
            database_url=database_url,
            tracker_url=tracker_url,
            redis_url=redis_url,
            action_url=NO_ACTION_SERVER,
            auth_token=AUTH_TOKEN,
            extra_env={"LEADBOT_CLOCK_OFFSET_FILE": str(clock_file)},
        )
        # The sender in this process reads the same clock as Rasa, so `send_at` and its "now" agree.
        clock.set_clock(clock.OffsetFileClock(str(clock_file)))
        yield Chain(rasa=rasa, tracker=tracker, engine=engine)
    finally:
        clock.set_clock(None)
        if rasa is not None:
            rasa.stop()
        tracker.dispose()
        engine.dispose()
        drop_database(tracker_name)
        drop_database(database_name)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bursts_through_rasa_and_a_failing_twilio_keep_order_and_lose_nothing(chain: Chain) -> None:
    engine = chain.engine
    leads = make_plan(CONTACTS, seed=10, ramp_seconds=CONTACTS / 100 * RAMP_SECONDS_PER_100)
    expected = 3 * CONTACTS
    with TwilioFake(
        failure_rate=FAILURE_RATE,
        failure_faults=(Fault.server_error(500), Fault.server_error(503), Fault.timeout(hang_seconds=HANG_SECONDS)),
        seed=10,
    ) as fake:
        cfg = dataclasses.replace(
            settings(),
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=TWILIO_FAKE_TOKEN,
            twilio_api_base_url=fake.base_url,
            twilio_timeout_seconds=TWILIO_TIMEOUT_SECONDS,
            send_max_attempts=5,
            # Real (short) backoff on the shared clock: a retrying message really holds its contact's later ones.
            send_backoff_base_seconds=0.05,
            send_backoff_max_seconds=0.5,
            sender_poll_seconds=0.05,
        )
        sender = Sender(TwilioTransport(cfg), engine=engine, cfg=cfg, threads=SENDER_THREADS)
        stop = threading.Event()
        worker = threading.Thread(target=sender.run, args=(stop,), name="fault-chain-sender", daemon=True)
        started = time.monotonic()
        worker.start()
        try:
            load = run_load(chain.rasa, leads, clients=HTTP_CLIENTS)
            wait_until(lambda: inbound_progress(engine) == (expected, expected), timeout=120 + CONTACTS * 0.5)
            turns_done = time.monotonic()
            wait_until(lambda: outbound_waiting(engine) == 0 and sender.busy == 0, timeout=120, interval=0.2)
            drained = time.monotonic()
        finally:
            stop.set()
            worker.join(timeout=30)
        figures = collect_figures(engine, chain.tracker, fake, leads)

    total = drained - started
    print(
        f"\nfault chain: {CONTACTS} contacts x 3 messages = {expected} inbound; {load.originals} webhooks + "
        f"{load.redeliveries} redeliveries of the same MessageSid ({load.redeliveries / load.originals:.1%}), "
        f"answers {dict(load.statuses)}, ack p50 {load.ack_percentile(50) * 1000:.0f} ms / "
        f"p99 {load.ack_percentile(99) * 1000:.0f} ms"
    )
    for line in figures.lines():
        print("  " + line)
    print(
        f"  time: load {load.seconds:.1f} s, all turns done {turns_done - started:.1f} s, queue drained "
        f"{drained - started:.1f} s (after the last turn {drained - turns_done:.1f} s); throughput "
        f"{expected / (turns_done - started):.1f} turns/s, {figures.accepted / total:.1f} accepted sends/s"
    )
    if figures.examples:
        print("  examples:", figures.examples)

    assert set(load.statuses) == {200}, load.statuses
    assert figures.inbound_missing == 0
    assert figures.inbound_persisted == figures.inbound_distinct == expected
    assert figures.inbound_unprocessed == 0 and figures.inbound_errors == {}
    assert figures.turns_missing == 0 and figures.turns_doubled == 0
    assert figures.replies_missing == 0 and figures.replies_doubled == 0 and figures.replies_produced == expected
    assert figures.produced_out_of_order == 0
    assert figures.accepted_doubles == 0
    assert figures.lost == 0 and figures.accepted + figures.dead_lettered == expected
    assert figures.accepted_out_of_order == 0 and figures.handed_over_early == 0
    # The failures really did make later replies wait behind a retrying one (what the order check is about).
    assert figures.held_behind_retry > 0
    # The fake really failed about 30 % of the requests (within four standard deviations of the binomial draw).
    share = figures.twilio_failed / figures.twilio_requests
    assert abs(share - FAILURE_RATE) < 4 * math.sqrt(FAILURE_RATE * (1 - FAILURE_RATE) / figures.twilio_requests)
