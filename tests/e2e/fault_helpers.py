"""The pieces of the chain fault test (issue 10, "Done means"): a lead load plan, the signed-webhook load
generator, and the figures read back from our database, Rasa's tracker database and the Twilio fake.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa

from tests.channel.conftest import INBOUND_PATH, RasaServer, inbound_form, sign
from tests.fakes.twilio_fake import TwilioFake

# What each lead sends (a burst of three, in a per-lead random order) and what the tiny channel-test bot answers
# to each: one distinct reply per text, so the replies name the inbound message they answer.
REPLIES = {
    "hallo": "Hallo! Schön, dass du da bist.",
    "Ja": "Super, danke für dein Ja.",
    "150": "Danke, die Zahl habe ich notiert.",
}
# Berlin 10:00 on a Wednesday: outside quiet hours whatever the wall clock says when the test runs.
DAYTIME = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)


def write_daytime_offset(path: Path, target: datetime = DAYTIME) -> float:
    """Point every process reading `LEADBOT_CLOCK_OFFSET_FILE` at `target` (time then runs on from there).

    Quiet hours (23:00-07:00 local) would otherwise defer every reply to the morning when the test runs at night.
    """
    offset = (target - datetime.now(timezone.utc)).total_seconds()
    path.write_text(str(offset), encoding="utf-8")
    return offset


# --- The plan -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lead:
    e164: str
    start: float  # seconds after the load starts
    texts: tuple[str, ...]  # in the order the lead sends them
    jitters: tuple[float, ...]  # pause after each message's ack before the next one (0-300 ms)
    sids: tuple[str, ...]
    redeliveries: tuple[float | None, ...]  # per message: None, or seconds after its ack when Twilio sends it again

    @property
    def sender_id(self) -> str:
        return "wa" + self.e164.lstrip("+")

    @property
    def expected_replies(self) -> list[str]:
        return [REPLIES[text] for text in self.texts]


NUMBER_PREFIX = "+4915177"


def clear_stale_locks(redis_url: str) -> int:
    """Drop Rasa ticket locks of our leads that a killed earlier run left behind (they would stall turns)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"leadbot:lock:wa{NUMBER_PREFIX.lstrip('+')}*"))
    return client.delete(*keys) if keys else 0


def make_plan(
    contacts: int,
    *,
    seed: int,
    ramp_seconds: float,
    duplicate_rate: float = 0.05,
    max_jitter_seconds: float = 0.3,
    max_redelivery_seconds: float = 1.0,
) -> list[Lead]:
    """Deterministic leads (numbers, texts, timing; so also the fake's seeded failures), interleaved start times."""
    rng = random.Random(seed)
    leads = []
    for index in range(contacts):
        texts = list(REPLIES)
        rng.shuffle(texts)
        leads.append(
            Lead(
                e164=f"{NUMBER_PREFIX}{index:06d}",
                start=rng.uniform(0, ramp_seconds),
                texts=tuple(texts),
                jitters=tuple(rng.uniform(0, max_jitter_seconds) for _ in texts),
                sids=tuple("SM" + rng.randbytes(16).hex() for _ in texts),
                redeliveries=tuple(
                    rng.uniform(0, max_redelivery_seconds) if rng.random() < duplicate_rate else None for _ in texts
                ),
            )
        )
    return leads


# --- The load -------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    originals: int = 0
    redeliveries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    ack_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def ack_percentile(self, q: float) -> float:
        if len(self.ack_seconds) < 2:
            return self.ack_seconds[0] if self.ack_seconds else 0.0
        return statistics.quantiles(self.ack_seconds, n=100)[int(q) - 1]


async def _post(
    client: httpx.AsyncClient, server: RasaServer, form: dict[str, str], slots: asyncio.Semaphore, report: LoadReport
) -> None:
    signature = sign(server.auth_token, server.public(INBOUND_PATH), form)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    async with slots:
        started = time.perf_counter()
        try:
            answer = await client.post(server.base + INBOUND_PATH, content=urlencode(form), headers=headers)
            status = answer.status_code
        except httpx.HTTPError:
            status = 0  # counted as a failed webhook; the assertions on 200 catch it
        report.ack_seconds.append(time.perf_counter() - started)
    report.statuses[status] += 1


async def _lead(
    client: httpx.AsyncClient, server: RasaServer, lead: Lead, slots: asyncio.Semaphore, report: LoadReport
) -> None:
    """One lead: its burst in order (each message after the previous one's ack plus jitter), with redeliveries."""
    await asyncio.sleep(lead.start)
    redeliveries = []
    for text, sid, jitter, again in zip(lead.texts, lead.sids, lead.jitters, lead.redeliveries, strict=True):
        form = inbound_form(lead.e164, text, sid=sid)
        await _post(client, server, form, slots, report)
        report.originals += 1
        if again is not None:
            redeliveries.append(asyncio.create_task(_redeliver(client, server, form, again, slots, report)))
        await asyncio.sleep(jitter)
    await asyncio.gather(*redeliveries)


async def _redeliver(
    client: httpx.AsyncClient,
    server: RasaServer,
    form: dict[str, str],
    delay: float,
    slots: asyncio.Semaphore,
    report: LoadReport,
) -> None:
    """Twilio sends the same MessageSid again (it thought the ack was lost): may overtake the lead's next message."""
    await asyncio.sleep(delay)
    await _post(client, server, form, slots, report)
    report.redeliveries += 1


def run_load(server: RasaServer, leads: list[Lead], *, clients: int) -> LoadReport:
    """Send every lead's burst as signed Twilio webhooks, at most `clients` requests in flight."""

    async def main() -> LoadReport:
        report = LoadReport()
        slots = asyncio.Semaphore(clients)
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            await asyncio.gather(*(_lead(client, server, lead, slots, report) for lead in leads))
        report.seconds = time.perf_counter() - started
        return report

    return asyncio.run(main())


# --- The figures ----------------------------------------------------------------------------------------------


def _rows(engine: sa.engine.Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(sql), params))


def inbound_progress(engine: sa.engine.Engine) -> tuple[int, int]:
    """(inbound persisted, inbound whose turn is finished)."""
    row = _rows(
        engine,
        "SELECT count(*) AS n, count(processed_at) AS done FROM messages WHERE direction = 'inbound'",
    )[0]
    return row.n, row.done


def outbound_waiting(engine: sa.engine.Engine) -> int:
    """Outbound rows still the sender's business (queued, not accepted by Twilio)."""
    return _rows(
        engine,
        "SELECT count(*) AS n FROM messages WHERE direction = 'outbound' AND delivery_status = 'queued' "
        "AND provider_message_id IS NULL",
    )[0].n


@dataclass
class Figures:
    contacts: int
    inbound_expected: int
    inbound_persisted: int
    inbound_distinct: int
    inbound_missing: int  # sent by a lead but not in our database
    inbound_unprocessed: int
    inbound_errors: dict[str, int]  # processed without a turn (error_code set), e.g. turn_failed
    turns_missing: int  # inbound messages without a user event in Rasa's tracker
    turns_doubled: int  # inbound messages with more than one user event
    replies_produced: int
    replies_missing: int  # inbound messages without their reply row
    replies_doubled: int  # inbound messages with more than one reply row
    produced_out_of_order: int  # contacts whose reply rows are not in the lead's order
    twilio_requests: int
    twilio_failed: int
    twilio_timeouts: int
    accepted: int
    accepted_doubles: int
    dead_lettered: int
    lost: int  # reply rows neither accepted by Twilio nor dead-lettered
    accepted_out_of_order: int  # contacts whose accepted order differs from the produced order (dead letters left out)
    handed_over_early: int  # contacts with a request for a reply before an earlier reply was accepted or dead-lettered
    held_behind_retry: int  # times a produced reply waited while an earlier one of its contact was being retried
    examples: dict[str, list[Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        failed_share = self.twilio_failed / self.twilio_requests if self.twilio_requests else 0.0
        return [
            f"inbound: {self.inbound_persisted} persisted, {self.inbound_distinct} distinct of "
            f"{self.inbound_expected} sent; {self.inbound_missing} lost, {self.inbound_unprocessed} unprocessed, "
            f"errors {self.inbound_errors or 0}",
            f"turns: {self.turns_missing} missing, {self.turns_doubled} doubled (Rasa tracker user events per "
            f"MessageSid)",
            f"replies: {self.replies_produced} produced, {self.replies_missing} missing, {self.replies_doubled} "
            f"doubled; {self.produced_out_of_order} contacts produced out of the lead's order",
            f"twilio: {self.twilio_requests} requests, {self.twilio_failed} failed ({failed_share:.1%}, "
            f"{self.twilio_timeouts} timeouts); {self.accepted} accepted, {self.accepted_doubles} doubles, "
            f"{self.dead_lettered} dead-lettered, {self.lost} lost",
            f"order: {self.accepted_out_of_order} of {self.contacts} contacts accepted out of the produced order; "
            f"{self.handed_over_early} contacts had a reply handed to Twilio before an earlier one was settled; "
            f"{self.held_behind_retry} times a reply waited behind a retrying one",
        ]


def collect_figures(
    engine: sa.engine.Engine, tracker_engine: sa.engine.Engine, fake: TwilioFake, leads: list[Lead]
) -> Figures:
    expected_sids = {sid for lead in leads for sid in lead.sids}
    inbound = _rows(
        engine,
        "SELECT m.provider_message_id AS sid, m.processed_at, m.error_code FROM messages m "
        "WHERE m.direction = 'inbound'",
    )
    persisted_sids = Counter(row.sid for row in inbound)
    errors = Counter(row.error_code for row in inbound if row.error_code)

    # Turns: Rasa records each turn's user message (with our MessageSid as message_id) in its tracker.
    user_events = _rows(
        tracker_engine,
        "SELECT sender_id, data::json ->> 'message_id' AS sid FROM events WHERE type_name = 'user'",
    )
    turns = Counter(row.sid for row in user_events)

    # Replies: per contact the outbound rows in the order they were produced (ids are the queue order).
    outbound = _rows(
        engine,
        "SELECT m.id, m.content, m.provider_message_id AS sid, m.attempts, m.created_at, "
        "coalesce(m.sent_at, d.created_at) AS settled_at, k.whatsapp_e164 AS e164, "
        "d.id AS dead_letter_id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "JOIN contacts k ON k.id = c.contact_id LEFT JOIN dead_letters d ON d.message_id = m.id "
        "WHERE m.direction = 'outbound' ORDER BY m.id",
    )
    produced: dict[str, list[str]] = defaultdict(list)
    dead: dict[str, set[str]] = defaultdict(set)
    lost = held = 0
    accepted_sids = {str(record.sid) for record in fake.accepted}
    previous: dict[str, Any] = {}
    for row in outbound:
        produced[row.e164].append(row.content)
        earlier = previous.get(row.e164)
        if earlier is not None and earlier.attempts > 1:
            # Produced while the earlier one was still unsettled (one clock for Rasa and the sender).
            held += earlier.settled_at is None or row.created_at < earlier.settled_at
        previous[row.e164] = row
        if row.dead_letter_id is not None:
            dead[row.e164].add(row.content)
        elif row.sid is None or row.sid not in accepted_sids:
            lost += 1

    accepted: dict[str, list[str]] = defaultdict(list)
    for record in fake.accepted:
        accepted[str(record.params["To"]).removeprefix("whatsapp:")].append(str(record.params.get("Body")))
    accepted_keys = Counter((str(r.params["To"]), str(r.params.get("Body"))) for r in fake.accepted)
    # Every request (failed ones too) in arrival order, as the position of its reply in the contact's queue: a
    # later reply may only be tried once every earlier one is settled, so the positions never go down.
    tried: dict[str, list[int]] = defaultdict(list)
    for record in fake.attempts:
        e164 = str(record.params["To"]).removeprefix("whatsapp:")
        tried[e164].append(produced[e164].index(str(record.params.get("Body"))))
    handed_over_early = sum(1 for positions in tried.values() if positions != sorted(positions))

    replies_missing = replies_doubled = produced_out_of_order = accepted_out_of_order = 0
    examples: dict[str, list[Any]] = defaultdict(list)
    for lead in leads:
        rows = produced.get(lead.e164, [])
        counts = Counter(rows)
        for reply in lead.expected_replies:
            replies_missing += counts[reply] == 0
            replies_doubled += counts[reply] > 1
        if rows != lead.expected_replies:
            produced_out_of_order += 1
            examples["produced"].append((lead.e164, lead.texts, rows))
        expected_accepted = [text for text in rows if text not in dead[lead.e164]]
        if accepted.get(lead.e164, []) != expected_accepted:
            accepted_out_of_order += 1
            examples["accepted"].append((lead.e164, expected_accepted, accepted.get(lead.e164, [])))

    return Figures(
        contacts=len(leads),
        inbound_expected=len(expected_sids),
        inbound_persisted=len(inbound),
        inbound_distinct=len(persisted_sids),
        inbound_missing=len(expected_sids - set(persisted_sids)),
        inbound_unprocessed=sum(1 for row in inbound if row.processed_at is None),
        inbound_errors=dict(errors),
        turns_missing=sum(1 for sid in expected_sids if turns[sid] == 0),
        turns_doubled=sum(1 for sid in expected_sids if turns[sid] > 1),
        replies_produced=len(outbound),
        replies_missing=replies_missing,
        replies_doubled=replies_doubled,
        produced_out_of_order=produced_out_of_order,
        twilio_requests=len(fake.attempts),
        twilio_failed=sum(1 for attempt in fake.attempts if attempt.status != 201),
        twilio_timeouts=sum(1 for attempt in fake.attempts if attempt.status == 504),
        accepted=len(fake.accepted),
        accepted_doubles=sum(count - 1 for count in accepted_keys.values() if count > 1),
        dead_lettered=sum(len(texts) for texts in dead.values()),
        lost=lost,
        accepted_out_of_order=accepted_out_of_order,
        handed_over_early=handed_over_early,
        held_behind_retry=held,
        examples={key: value[:5] for key, value in examples.items()},
    )
