"""Delivers the CRM outbox (`crm_outbox`) through the configured CRM adapter, with retries and dead letters.

- One row per transaction: the row is claimed with `FOR UPDATE SKIP LOCKED` (PostgreSQL), delivered, and its
  outcome committed, so several workers never deliver the same row and a crash simply leaves it pending.
- Per-contact order: a row waits while an older row of the same contact is still pending (also while that one
  backs off), so a contact's activities never overtake its upsert.
- Failures back off exponentially (`CRM_BACKOFF_BASE_SECONDS` doubling up to `CRM_BACKOFF_MAX_SECONDS`, or the
  CRM's `Retry-After` when longer). After `CRM_MAX_ATTEMPTS`, or at once for a request the CRM rejects as
  invalid, the row becomes `failed` with a `DeadLetter(kind="crm_sync")`. Replaying a dead letter means setting
  the row back to `pending` with `attempts = 0` and `next_attempt_at = now`.
- The scheduler process calls `run_forever(stop_event)` in a thread (or `run_due()` from an interval job).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from leadbot.adapters.crm.port import (
    CrmActivity,
    CrmContact,
    CrmError,
    CrmPort,
    CrmResult,
    CrmTask,
    NoCrm,
)
from leadbot.clock import now as clock_now
from leadbot.config import Settings, settings
from leadbot.db.models import Contact, Conversation, CrmOutbox, DeadLetter, QualificationAnswer
from leadbot.metrics import CRM_OUTBOX_DEPTH, DEAD_LETTERS

log = logging.getLogger(__name__)

SKIPPED_NOTE = "skipped: CRM_ADAPTER=none"


def build_port(cfg: Settings | None = None) -> CrmPort:
    """The adapter named by `CRM_ADAPTER` (none|hubspot|webhook)."""
    cfg = cfg or settings()
    if cfg.crm_adapter == "hubspot":
        from leadbot.adapters.crm.hubspot import HubSpotCrm

        return HubSpotCrm(cfg.hubspot_api_base_url, cfg.hubspot_access_token, timeout=cfg.crm_timeout_seconds)
    if cfg.crm_adapter == "webhook":
        from leadbot.adapters.crm.webhook import WebhookCrm

        return WebhookCrm(cfg.crm_webhook_url, cfg.crm_webhook_secret, timeout=cfg.crm_timeout_seconds)
    if cfg.crm_adapter in ("", "none"):
        return NoCrm()
    raise ValueError(f"unknown CRM_ADAPTER: {cfg.crm_adapter}")


def backoff(attempts: int, cfg: Settings | None = None, retry_after: float | None = None) -> timedelta:
    cfg = cfg or settings()
    delay = min(cfg.crm_backoff_base_seconds * 2 ** max(attempts - 1, 0), cfg.crm_backoff_max_seconds)
    return timedelta(seconds=max(delay, retry_after or 0.0))


def _parse_time(value: Any, default: datetime) -> datetime:
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is not None:
            return parsed
    return default


def contact_snapshot(session: Session, contact_id: int, extra: dict[str, Any]) -> CrmContact | None:
    """The contact's current state from our tables (None when the contact has been deleted meanwhile)."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return None
    conversation = session.execute(
        select(Conversation).where(Conversation.contact_id == contact.id).order_by(Conversation.id.desc()).limit(1)
    ).scalar_one_or_none()
    answers = None
    if conversation is not None:
        answers = session.execute(
            select(QualificationAnswer).where(QualificationAnswer.conversation_id == conversation.id)
        ).scalar_one_or_none()
    return CrmContact(
        contact_id=contact.id,
        crm_id=contact.crm_id,
        whatsapp_e164=contact.whatsapp_e164,
        first_name=contact.first_name,
        consent_status=contact.consent_status,
        conversation_status=conversation.status if conversation else None,
        ads_running=answers.ads_running if answers else None,
        monthly_leads_bucket=answers.monthly_leads_bucket if answers else None,
        qualified=answers.qualified if answers else None,
        qualification_reason=answers.reason if answers else None,
        extra=extra,
    )


def deliver(session: Session, port: CrmPort, row: CrmOutbox, cfg: Settings) -> tuple[CrmResult, str | None]:
    """One CRM call for one row; returns the result and an optional note for `last_error` on success."""
    payload = dict(row.payload_json or {})
    key = f"crm-outbox-{row.id}"
    if row.operation == "delete_contact":
        result = port.delete_contact(
            row.contact_id or 0, payload.get("crm_id"), key=key, phone_sha256=payload.get("phone_sha256")
        )
        return result, None
    if row.contact_id is None:
        raise CrmError(f"{row.operation} without contact_id", retryable=False)
    contact = contact_snapshot(session, row.contact_id, payload)
    if contact is None:
        # Deleted (privacy) after this write was queued: sending it would recreate what was just erased.
        return CrmResult(), "skipped: contact deleted"
    if row.operation == "lead_upsert":
        return port.upsert_contact(contact, key=key), None
    if row.operation == "activity":
        activity = CrmActivity(
            type=str(payload.get("type") or "note"),
            text=str(payload.get("text") or payload.get("type") or "WhatsApp-Aktivität"),
            occurred_at=_parse_time(payload.get("occurred_at"), row.created_at),
            data={k: v for k, v in payload.items() if k not in ("type", "text", "occurred_at")},
        )
        return port.add_activity(contact, activity, key=key), None
    if row.operation == "handover":
        reason = str(payload.get("reason") or "handover")
        task = CrmTask(
            subject=str(
                payload.get("subject")
                or f"{'Eskalation: ' if payload.get('escalation') else ''}WhatsApp-Lead übernehmen ({reason})"
            ),
            text=str(payload.get("text") or f"Der Lead möchte mit einem Menschen sprechen. Grund: {reason}"),
            due_at=_parse_time(payload.get("due_at"), row.created_at + timedelta(minutes=cfg.handover_sla_minutes)),
            reason=reason,
        )
        return port.create_handover_task(contact, task, key=key), None
    raise CrmError(f"unknown operation {row.operation}", retryable=False)


def _claim_query(current: datetime):  # noqa: ANN202 - a SQLAlchemy Select
    older = aliased(CrmOutbox)
    blocked = (
        select(older.id)
        .where(older.contact_id == CrmOutbox.contact_id, older.status == "pending", older.id < CrmOutbox.id)
        .exists()
    )
    return (
        select(CrmOutbox)
        .where(CrmOutbox.status == "pending", CrmOutbox.next_attempt_at <= current, ~blocked)
        .order_by(CrmOutbox.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def _fail(session: Session, row: CrmOutbox, error: str, code: str) -> None:
    row.status = "failed"
    session.add(DeadLetter(kind="crm_sync", outbox_id=row.id, reason=error, error_code=code, attempts=row.attempts))
    DEAD_LETTERS.labels(kind="crm_sync").inc()
    log.warning("CRM outbox row %s (%s, contact %s) dead-lettered: %s", row.id, row.operation, row.contact_id, error)


def process_one(session: Session, port: CrmPort, current: datetime, cfg: Settings) -> bool:
    """Claim, deliver and settle one due row in the session's transaction; False when nothing is due."""
    row = session.execute(_claim_query(current)).scalar_one_or_none()
    if row is None:
        return False
    row.attempts += 1
    row.updated_at = current
    try:
        result, note = deliver(session, port, row, cfg)
    except CrmError as exc:
        row.last_error = str(exc)[:2000]
        if not exc.retryable or row.attempts >= cfg.crm_max_attempts:
            _fail(session, row, row.last_error, exc.code)
        else:
            row.next_attempt_at = current + backoff(row.attempts, cfg, exc.retry_after)
            log.info("CRM outbox row %s attempt %s failed, retry at %s: %s", row.id, row.attempts,
                     row.next_attempt_at.isoformat(), exc.code)
        return True
    except Exception as exc:  # a bug or unexpected answer: keep the row (retry, then dead letter), never lose it
        log.exception("CRM outbox row %s: unexpected error", row.id)
        row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        if row.attempts >= cfg.crm_max_attempts:
            _fail(session, row, row.last_error, "exception")
        else:
            row.next_attempt_at = current + backoff(row.attempts, cfg)
        return True
    row.status = "done"
    row.last_error = SKIPPED_NOTE if isinstance(port, NoCrm) else note
    if result.crm_contact_id and row.contact_id is not None:
        contact = session.get(Contact, row.contact_id)
        if contact is not None and contact.crm_id != result.crm_contact_id:
            contact.crm_id = result.crm_contact_id
    return True


def run_once(
    session_factory: Callable[[], Session],
    port: CrmPort,
    now: datetime | None = None,
    *,
    limit: int | None = None,
    cfg: Settings | None = None,
) -> int:
    """Deliver due rows (at most `limit`, default `CRM_OUTBOX_BATCH_SIZE`); returns how many were handled."""
    cfg = cfg or settings()
    current = now or clock_now()
    handled = 0
    for _ in range(limit or cfg.crm_outbox_batch_size):
        session = session_factory()
        try:
            found = process_one(session, port, current, cfg)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        if not found:
            break
        handled += 1
    _update_depth(session_factory)
    return handled


def _update_depth(session_factory: Callable[[], Session]) -> None:
    session = session_factory()
    try:
        CRM_OUTBOX_DEPTH.set(
            session.execute(select(func.count()).select_from(CrmOutbox).where(CrmOutbox.status == "pending")).scalar()
        )
    finally:
        session.close()


def run_due() -> int:
    """One pass with the configured database and adapter (for an APScheduler interval job)."""
    from leadbot.db.session import session_factory

    return run_once(session_factory(), _configured_port())


_port: CrmPort | None = None
_port_lock = threading.Lock()


def _configured_port() -> CrmPort:
    global _port
    with _port_lock:
        if _port is None:
            _port = build_port()
        return _port


def run_forever(stop: threading.Event, poll_seconds: float | None = None) -> None:
    """The scheduler's loop: deliver due rows every `CRM_OUTBOX_POLL_SECONDS` until `stop` is set."""
    interval = poll_seconds if poll_seconds is not None else settings().crm_outbox_poll_seconds
    while not stop.is_set():
        try:
            handled = run_due()
        except Exception:  # the database may be briefly away; the next pass retries
            log.exception("CRM outbox pass failed")
            handled = 0
        if handled == 0:
            stop.wait(interval)
