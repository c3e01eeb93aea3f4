"""The CRM outbox against a HubSpot-faithful server and a signed-webhook receiver: delivery, outage, recovery."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from leadbot.adapters.crm import outbox_worker
from leadbot.adapters.crm.hubspot import HubSpotCrm
from leadbot.adapters.crm.outbox_worker import SKIPPED_NOTE, run_once
from leadbot.adapters.crm.port import NoCrm
from leadbot.adapters.crm.webhook import WebhookCrm, sign, verify_signature
from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db.models import Contact, CrmOutbox, DeadLetter, QualificationAnswer
from leadbot.services import contacts, crm_outbox
from tests.fakes.hubspot_fake import HubSpotFake

PHONE = "+4915112345678"


def make_contact(db: Session, phone: str = PHONE, first_name: str | None = "Lena") -> Contact:
    contact = contacts.get_or_create_contact(db, phone, first_name)
    contacts.current_conversation(db, contact)
    db.commit()
    return contact


def rows(db: Session) -> list[CrmOutbox]:
    db.expire_all()
    return list(db.execute(select(CrmOutbox).order_by(CrmOutbox.id)).scalars())


def test_upsert_creates_once_then_updates_by_phone(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    db.commit()
    assert run_once(make_session, hubspot_port) == 1

    [created] = hubspot.contacts()
    assert created["properties"]["phone"] == PHONE
    assert created["properties"]["firstname"] == "Lena"
    assert created["properties"]["lifecyclestage"] == "lead"
    db.refresh(contact)
    assert contact.crm_id == created["id"]

    # Qualified later: the next upsert sends the contact's current state to the same record.
    conversation = contacts.current_conversation(db, contact)
    conversation.status = "qualified"
    db.add(QualificationAnswer(conversation_id=conversation.id, ads_running="yes", monthly_leads_bucket="300+",
                               qualified="true", reason="q2>=100"))
    contact.first_name = "Lena Marie"
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {"reason": "qualified"})
    db.commit()
    assert run_once(make_session, hubspot_port) == 1

    [updated] = hubspot.contacts()
    assert updated["id"] == created["id"]
    assert updated["properties"]["firstname"] == "Lena Marie"
    assert updated["properties"]["hs_lead_status"] == "IN_PROGRESS"
    assert [r.status for r in rows(db)] == ["done", "done"]


def test_contact_entered_by_sales_is_found_by_phone(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    by_sales = {"mobilephone": PHONE, "firstname": "Lena", "hs_lead_status": "CONNECTED"}
    existing = hubspot.handle("POST", "/crm/v3/objects/contacts", {"properties": by_sales})
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    db.commit()
    run_once(make_session, hubspot_port)

    [only] = hubspot.contacts()
    assert only["id"] == existing[1]["id"]
    assert only["properties"]["phone"] == PHONE
    assert only["properties"]["hs_lead_status"] == "CONNECTED"  # no qualification outcome yet: sales' status stays
    db.refresh(contact)
    assert contact.crm_id == only["id"]


def test_outage_then_recovery_loses_nothing_and_duplicates_nothing(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    crm_outbox.enqueue(db, contact.id, "activity",
                       {"type": "appointment_booked", "text": "Termin gebucht: Do, 26.11. um 10:00"})
    crm_outbox.enqueue(db, contact.id, "handover", {"reason": "human_requested", "text": "Bitte anrufen"})
    db.commit()
    start = frozen_clock.now()

    hubspot.outage(503)
    # The upsert fails; the activity and the task wait behind it (per-contact order) instead of failing too.
    assert run_once(make_session, hubspot_port) == 1
    upsert, activity, handover = rows(db)
    assert (upsert.status, upsert.attempts) == ("pending", 1)
    assert "503" in upsert.last_error and "SERVICE_UNAVAILABLE" in upsert.last_error
    assert upsert.next_attempt_at == start + timedelta(seconds=settings().crm_backoff_base_seconds)
    assert (activity.attempts, handover.attempts) == (0, 0)

    frozen_clock.advance(timedelta(seconds=10))  # not due yet
    assert run_once(make_session, hubspot_port) == 0
    frozen_clock.advance(timedelta(seconds=25))  # due again, CRM still down: backoff doubles
    assert run_once(make_session, hubspot_port) == 1
    doubled = timedelta(seconds=2 * settings().crm_backoff_base_seconds)
    assert rows(db)[0].next_attempt_at == frozen_clock.now() + doubled

    hubspot.recover()
    frozen_clock.advance(timedelta(minutes=5))
    assert run_once(make_session, hubspot_port) == 3

    assert [(r.status, r.attempts) for r in rows(db)] == [("done", 3), ("done", 1), ("done", 1)]
    [crm_contact] = hubspot.contacts()
    [note] = hubspot.engagements("notes", crm_contact["id"])
    assert note["properties"]["hs_note_body"] == "Termin gebucht: Do, 26.11. um 10:00"
    [task] = hubspot.engagements("tasks", crm_contact["id"])
    assert task["properties"]["hs_task_body"] == "Bitte anrufen"
    assert task["properties"]["hs_task_priority"] == "HIGH"
    assert db.execute(select(DeadLetter)).first() is None


def test_lost_response_does_not_create_a_second_contact(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    db.commit()
    hubspot.lose_responses(1)  # HubSpot creates the contact, the answer never arrives
    run_once(make_session, hubspot_port)
    assert rows(db)[0].status == "pending"
    assert len(hubspot.contacts()) == 1

    frozen_clock.advance(timedelta(hours=1))
    run_once(make_session, hubspot_port)
    assert rows(db)[0].status == "done"
    assert len(hubspot.contacts()) == 1  # the retry found it by phone
    db.refresh(contact)
    assert contact.crm_id == hubspot.contacts()[0]["id"]


def test_rate_limit_is_retried_and_email_conflict_updates_the_existing_contact(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    _, existing = hubspot.handle("POST", "/crm/v3/objects/contacts", {"properties": {"email": "lena@example.de"}})
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {"email": "lena@example.de"})
    db.commit()
    hubspot.fail_next(1, 429)
    run_once(make_session, hubspot_port)
    assert "RATE_LIMIT" in rows(db)[0].last_error

    frozen_clock.advance(timedelta(hours=1))
    run_once(make_session, hubspot_port)
    assert rows(db)[0].status == "done"
    [only] = hubspot.contacts()
    assert only["id"] == existing["id"] and only["properties"]["phone"] == PHONE


def test_dead_letter_after_the_last_attempt_and_at_once_for_a_rejected_request(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    cfg = replace(settings(), crm_max_attempts=3)
    first = make_contact(db)
    second = make_contact(db, "+4915112345679", "Max")
    crm_outbox.enqueue(db, first.id, "lead_upsert", {})
    db.commit()

    hubspot.outage(500)
    for _ in range(3):
        run_once(make_session, hubspot_port, cfg=cfg)
        frozen_clock.advance(timedelta(hours=2))
    [row] = rows(db)
    assert (row.status, row.attempts) == ("failed", 3)
    [letter] = db.execute(select(DeadLetter)).scalars()
    assert (letter.kind, letter.outbox_id, letter.error_code, letter.attempts) == ("crm_sync", row.id, "http_500", 3)

    hubspot.recover()
    hubspot.fail_next(1, 400)  # HubSpot rejects the request itself: retrying the same body cannot succeed
    crm_outbox.enqueue(db, second.id, "lead_upsert", {})
    db.commit()
    run_once(make_session, hubspot_port, cfg=cfg)
    assert rows(db)[1].status == "failed" and rows(db)[1].attempts == 1
    assert len(db.execute(select(DeadLetter)).all()) == 2


def test_delete_reaches_the_crm_without_personal_data_in_the_outbox(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    db.commit()
    run_once(make_session, hubspot_port)
    db.refresh(contact)
    crm_id, contact_id = contact.crm_id, contact.id

    # What a privacy delete does: queue the CRM delete by CRM id, then remove our rows.
    crm_outbox.enqueue(db, contact_id, "activity", {"type": "note", "text": "queued before the delete"})
    crm_outbox.enqueue(db, contact_id, "delete_contact", {"crm_id": crm_id})
    db.delete(contact)
    db.commit()
    run_once(make_session, hubspot_port)

    assert hubspot.contacts() == []
    activity, delete = rows(db)[1:]
    assert (activity.status, activity.last_error) == ("done", "skipped: contact deleted")
    assert delete.status == "done"
    assert PHONE not in json.dumps([r.payload_json for r in rows(db)])


def test_no_crm_configured_marks_rows_done_with_a_note(
    db: Session, make_session: sessionmaker, frozen_clock: FrozenClock
) -> None:
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    db.commit()
    assert isinstance(outbox_worker.build_port(replace(settings(), crm_adapter="none")), NoCrm)
    run_once(make_session, NoCrm())
    [row] = rows(db)
    assert (row.status, row.last_error) == ("done", SKIPPED_NOTE)


def test_a_row_locked_by_another_worker_is_skipped(
    db: Session, make_session: sessionmaker, hubspot: HubSpotFake, hubspot_port: HubSpotCrm, frozen_clock: FrozenClock
) -> None:
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    db.commit()
    with make_session() as other_worker:
        claimed = other_worker.execute(outbox_worker._claim_query(frozen_clock.now())).scalar_one()
        assert run_once(make_session, hubspot_port) == 0  # SKIP LOCKED: no waiting, no double delivery
        assert claimed.status == "pending"
        other_worker.rollback()
    assert run_once(make_session, hubspot_port) == 1
    assert len(hubspot.contacts()) == 1


# --- the generic signed webhook -----------------------------------------------------------------------------

SECRET = "whsec-test"


class Receiver:
    """A CRM-side receiver written from the webhook documentation alone (not with our helper)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.rejected = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Leadbot-Timestamp"]
                expected = "v1=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, self.headers["X-Leadbot-Signature"]):
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.fail_first:
                    receiver.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                event = json.loads(body)
                receiver.deliveries.append({"delivery": self.headers["X-Leadbot-Delivery"], **event})
                answer = json.dumps({"crm_id": "ext-42"} if event["event"] == "lead_upsert" else {}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/crm/leadbot"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    server = Receiver(fail_first=1)
    yield server
    server.stop()


def test_webhook_deliveries_are_signed_retried_with_the_same_id_and_store_the_crm_id(
    db: Session, make_session: sessionmaker, receiver: Receiver, frozen_clock: FrozenClock
) -> None:
    port = WebhookCrm(receiver.url, SECRET, timeout=5)
    contact = make_contact(db)
    crm_outbox.enqueue(db, contact.id, "lead_upsert", {})
    crm_outbox.enqueue(db, contact.id, "activity", {"type": "appointment_booked", "text": "Termin gebucht"})
    db.commit()

    run_once(make_session, port)  # the receiver answers 503 to the first delivery
    frozen_clock.advance(timedelta(hours=1))
    run_once(make_session, port)

    assert receiver.rejected == 0
    upsert, activity = receiver.deliveries
    first_row = rows(db)[0]
    assert upsert["delivery"] == upsert["id"] == f"crm-outbox-{first_row.id}"
    assert first_row.attempts == 2  # the same delivery id was sent twice; the receiver deduplicates on it
    assert upsert["event"] == "lead_upsert" and upsert["contact"]["whatsapp_e164"] == PHONE
    assert activity["event"] == "activity" and activity["contact"]["crm_id"] == "ext-42"
    assert activity["data"]["text"] == "Termin gebucht"
    db.refresh(contact)
    assert contact.crm_id == "ext-42"


def test_webhook_signature_rejects_tampering_and_replays() -> None:
    body = b'{"event":"activity"}'
    signature = sign(SECRET, 1_800_000_000, body)
    assert verify_signature(SECRET, body, "1800000000", signature, now=1_800_000_100)
    assert not verify_signature(SECRET, body + b" ", "1800000000", signature, now=1_800_000_100)
    assert not verify_signature("other", body, "1800000000", signature, now=1_800_000_100)
    assert not verify_signature(SECRET, body, "1800000000", signature, now=1_800_000_000 + 301)  # replayed later
    assert not verify_signature(SECRET, body, "not-a-time", signature, now=1_800_000_000)
