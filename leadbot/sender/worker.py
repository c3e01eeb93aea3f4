"""The sender: hands queued outbound messages to the transport, one conversation head at a time.

Ordering (issue 10 points 3 and 5): only the HEAD of a conversation's queue is ever claimed, i.e. the lowest id
that is still queued and not yet accepted by Twilio. A message that waits (retry backoff, quiet-hours deferral)
stays the head, so later messages of that contact wait behind it; once it is accepted or has failed for good, the
next one becomes the head. Different conversations are independent and run in parallel on a bounded thread pool.

Concurrency: on PostgreSQL the head row is claimed `FOR UPDATE SKIP LOCKED` and the lock is held until the
outcome of the send is committed, so several sender replicas never hand one message to Twilio twice, and a
replica never sees the next message as head before the previous one's outcome is committed. SQLite (the embedded
single-process default) has no row locks: claims are serialised in-process and conversations in flight are skipped.

Ambiguous sends (Twilio's Messages API has no idempotency key): a read timeout or a reset connection after the
request was written may hide a message Twilio accepted. The sender then stores `payload_json["ambiguous_since"]`
(the start of the first such attempt), waits at least one more client timeout, and before any further send (and
before the policy gate) asks the transport for a message to the same recipient from the same sender with the same
text created since then whose SID no row of ours holds yet. Found: that SID is adopted with Twilio's status and
nothing is sent again. Not found: it is sent again. The lookup failed: it backs off and asks again, never sending
blind; lookups count against the retry budget, and a message whose budget ran out on an ambiguous attempt is
looked up once more before it is dead-lettered. Still at-least-once: a crash between Twilio's acceptance and our
commit (nothing marked that attempt), and a request Twilio holds longer than timeout + wait before accepting it.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot.adapters.twilio_errors import ErrorClass, SendError, backoff_seconds
from leadbot.adapters.twilio_transport import AcceptedMessage, OutboundMessage, SendResult, Transport
from leadbot.clock import now as clock_now
from leadbot.config import Settings, settings
from leadbot.db.models import Contact, Conversation, DeadLetter, Message
from leadbot.db.session import get_engine, is_sqlite, session_factory
from leadbot.domain import policy
from leadbot.domain.policy import MessageKind, Purpose
from leadbot.domain.templates import TemplateError, get_template
from leadbot.metrics import (
    DEAD_LETTERS,
    OUTBOUND_QUEUE_DEPTH,
    OUTBOUND_QUEUE_LAG,
    POLICY_BLOCKS,
    SEND_ATTEMPTS,
    SEND_FAILURES,
)
from leadbot.phone import mask
from leadbot.services import audit
from leadbot.services.inbound import CHANNEL, TWILIO_STATUS_MAP, status_transition
from leadbot.services.outbound import contact_state, policy_config

log = logging.getLogger(__name__)


def _waiting() -> Any:
    """Outbound messages that are still the sender's business: queued and not yet accepted by Twilio."""
    return (
        (Message.direction == "outbound")
        & (Message.delivery_status == "queued")
        & Message.provider_message_id.is_(None)
    )


def head_candidates(
    now: datetime, *, postgres: bool, exclude_conversations: set[int] | frozenset[int] = frozenset(), limit: int = 1
) -> Any:
    """Ids of due messages that are the head (lowest waiting id) of their conversation's queue, oldest first.

    PostgreSQL uses DISTINCT ON, a single sort over the waiting rows: right after a burst the table statistics
    are stale, and the planner turned the portable join below into a nested loop costing seconds per claim.
    """
    if postgres:
        heads = (
            select(Message.id, Message.send_at, Message.next_attempt_at)
            .where(_waiting())
            .distinct(Message.conversation_id)
            .order_by(Message.conversation_id, Message.id)
        )
    else:
        first = (
            select(func.min(Message.id).label("head_id"))
            .where(_waiting())
            .group_by(Message.conversation_id)
            .subquery("firsts")
        )
        heads = select(Message.id, Message.send_at, Message.next_attempt_at).join(first, first.c.head_id == Message.id)
    if exclude_conversations:
        heads = heads.where(Message.conversation_id.not_in(exclude_conversations))
    head = heads.subquery("heads")
    return (
        select(head.c.id)
        .where(head.c.send_at <= now, or_(head.c.next_attempt_at.is_(None), head.c.next_attempt_at <= now))
        .order_by(head.c.send_at, head.c.id)
        .limit(limit)
    )


def outbound_message(message: Message, contact: Contact) -> OutboundMessage:
    payload = message.payload_json or {}
    content_sid, variables = None, None
    if message.template_name:
        content_sid = get_template(message.template_name).content_sid
        variables = payload.get("variables") or None
    buttons: tuple[tuple[str, str], ...] = ()
    if not message.template_name:  # an approved template carries its own buttons
        buttons = tuple((str(b["title"]), str(b.get("payload") or b["title"])) for b in payload.get("buttons") or ())
    return OutboundMessage(
        message_id=message.id,
        to=contact.whatsapp_e164,
        body=message.content or "",
        content_sid=content_sid,
        content_variables=variables,
        buttons=buttons,
        media_url=payload.get("media_url"),
    )


def send_request(message: Message) -> policy.SendRequest:
    """The policy question for a queued row, asked again at send time with the contact's current state."""
    payload = message.payload_json or {}
    approved = False
    if message.template_name:
        try:
            approved = get_template(message.template_name).approved
        except TemplateError:
            approved = False
    deadline = _aware(payload.get("deadline"))
    return policy.SendRequest(
        kind=MessageKind.TEMPLATE if message.template_name else MessageKind.SESSION,
        purpose=Purpose(payload.get("purpose") or Purpose.CONVERSATION.value),
        sender_role=message.sender_role,
        template_name=message.template_name,
        template_approved=approved,
        deadline=deadline,
    )


def _aware(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    moment = datetime.fromisoformat(raw)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Sender:
    def __init__(
        self,
        transport: Transport,
        *,
        engine: Engine | None = None,
        cfg: Settings | None = None,
        threads: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.cfg = cfg or settings()
        self.engine = engine or get_engine()
        self.threads = max(1, threads or self.cfg.sender_threads)
        self._sessions = session_factory(self.engine)
        self._rng = rng or random.Random()
        self._sqlite = is_sqlite(str(self.engine.url))
        self._claim_lock = threading.Lock()
        self._inflight: set[int] = set()
        self._busy = 0
        self._busy_lock = threading.Lock()

    # --- running ----------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set; each thread finishes the message in hand before it exits."""
        workers = [
            threading.Thread(target=self._loop, args=(stop,), name=f"sender-{index}", daemon=True)
            for index in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                worked = self.process_next()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker thread
                log.exception("sender iteration failed")
                worked = False
            if not worked:
                stop.wait(self.cfg.sender_poll_seconds)

    def drain(self, max_rounds: int = 10_000) -> int:
        """Process until nothing is due (tests, benchmarks). Returns how many messages were processed."""
        total = 0
        for _ in range(max_rounds):
            with ThreadPoolExecutor(self.threads, thread_name_prefix="sender-drain") as pool:
                processed = sum(pool.map(lambda _: self._work_until_idle(), range(self.threads)))
            total += processed
            if processed == 0:
                return total
        return total

    def _work_until_idle(self) -> int:
        count = 0
        while self.process_next():
            count += 1
        return count

    @property
    def busy(self) -> int:
        return self._busy

    # --- one message ------------------------------------------------------------------------------------------
    def process_next(self) -> bool:
        """Claim one due head message and settle it. False when nothing is due."""
        session: Session = self._sessions()
        claimed_conversation: int | None = None
        try:
            message = self._claim(session)
            if message is None:
                session.rollback()
                return False
            claimed_conversation = message.conversation_id
            with self._busy_lock:
                self._busy += 1
            try:
                after_commit = self._settle(session, message)
                session.commit()
            finally:
                with self._busy_lock:
                    self._busy -= 1
            if after_commit is not None:
                after_commit()
            return True
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            if claimed_conversation is not None:
                with self._claim_lock:
                    self._inflight.discard(claimed_conversation)

    def _claim(self, session: Session) -> Message | None:
        now = clock_now()
        if not self._sqlite:
            with self._claim_lock:
                exclude = set(self._inflight)
            query = head_candidates(now, postgres=True, exclude_conversations=exclude, limit=self.threads + 1)
            for candidate in session.execute(query).scalars().all():
                # Lock it, re-checking on the newest row version that no other sender settled it meanwhile.
                message = session.execute(
                    select(Message).where(Message.id == candidate, _waiting()).with_for_update(skip_locked=True)
                ).scalar_one_or_none()
                if message is not None:
                    with self._claim_lock:
                        self._inflight.add(message.conversation_id)
                    return message
            return None
        with self._claim_lock:
            query = head_candidates(now, postgres=False, exclude_conversations=self._inflight)
            candidate = session.execute(query).scalar_one_or_none()
            message = session.get(Message, candidate) if candidate is not None else None
            if message is not None:
                self._inflight.add(message.conversation_id)
        # End the read transaction: SQLite could not upgrade it to a write after another thread committed.
        session.commit()
        return message

    def _settle(self, session: Session, message: Message) -> Any:
        """Re-check the policy, send, and record the outcome. Returns a callable to run after the commit."""
        now = clock_now()
        conversation = session.get(Conversation, message.conversation_id)
        contact = conversation.contact
        ambiguous_since = _aware((message.payload_json or {}).get("ambiguous_since"))
        if ambiguous_since is not None:
            # Before the policy gate: a message Twilio already accepted has reached the lead, whatever the gate
            # would say now.
            settled, after_commit = self._reconcile(session, message, conversation, contact, ambiguous_since)
            if settled:
                return after_commit
        try:
            request = send_request(message)
        except ValueError as exc:  # an unknown purpose in the payload: nothing sensible to send
            self._fail(session, message, contact, code="invalid_payload", reason=str(exc), dead_letter=True)
            return None
        decision = policy.evaluate(request, contact_state(contact, conversation), now, policy_config(self.cfg))
        if not decision.allowed:
            reason = decision.reason.value if decision.reason else "blocked"
            message.delivery_status = "failed"
            message.error_code = f"policy:{reason}"
            audit.record(
                session,
                contact.id,
                "policy_blocked_send",
                reason=reason,
                message_id=message.id,
                template_name=message.template_name,
                stage="send",
            )
            POLICY_BLOCKS.labels(reason).inc()
            SEND_ATTEMPTS.labels("policy_blocked").inc()
            return None
        if decision.send_at is not None and decision.send_at > now:
            # Quiet hours began while it waited: it keeps its place at the head; later messages wait behind it.
            message.send_at = decision.send_at
            SEND_ATTEMPTS.labels("deferred").inc()
            return None

        try:
            outbound = outbound_message(message, contact)
        except TemplateError as exc:
            self._fail(session, message, contact, code="template_error", reason=str(exc), dead_letter=True)
            return None
        attempt_started = clock_now()
        result = self.transport.send(outbound)
        message.attempts = (message.attempts or 0) + 1
        if result.ok:
            message.provider_message_id = result.sid
            message.sent_at = clock_now()
            message.next_attempt_at = None
            message.error_code = None
            conversation.last_outbound_at = message.sent_at
            SEND_ATTEMPTS.labels("accepted").inc()
            return lambda: self.transport.committed(outbound, result)
        error = result.error or SendError(ErrorClass.RETRYABLE, "unknown", "transport returned neither sid nor error")
        if error.ambiguous and ambiguous_since is None:
            # Reassigned, not mutated: the JSON column does not track changes inside the dict.
            message.payload_json = {**(message.payload_json or {}), "ambiguous_since": attempt_started.isoformat()}
        self._on_error(session, message, contact, error)
        return None

    def _reconcile(
        self, session: Session, message: Message, conversation: Conversation, contact: Contact, since: datetime
    ) -> tuple[bool, Any]:
        """Look a message with an ambiguous attempt up at Twilio before it may be sent again.

        Returns (True, after-commit callable or None) when that settled it for this pass (adopted, backed off or
        dead-lettered), (False, None) when Twilio holds no such message and it may be sent again.
        """
        try:
            outbound = outbound_message(message, contact)
        except TemplateError:
            return False, None  # the template is gone: the send path fails it as before
        lookup = self.transport.find_accepted(outbound, since)
        if lookup.error is not None:
            message.attempts = (message.attempts or 0) + 1
            self._on_error(session, message, contact, lookup.error)
            return True, None
        earlier = _unrecorded(session, lookup.matches)
        if earlier is not None:
            return True, self._adopt(message, conversation, contact, outbound, earlier)
        if (message.attempts or 0) >= self.cfg.send_max_attempts:
            code = message.error_code or "timeout"
            reason = (
                f"gave up after {message.attempts} attempts; last error {code}; "
                "Twilio holds no matching message, so none of them was accepted"
            )
            self._fail(session, message, contact, code=code, reason=reason, dead_letter=True)
            return True, None
        SEND_ATTEMPTS.labels("not_accepted").inc()
        return False, None

    def _adopt(
        self, message: Message, conversation: Conversation, contact: Contact, outbound: OutboundMessage,
        accepted: AcceptedMessage,
    ) -> Any:
        """An ambiguous attempt was accepted after all: record Twilio's SID and status instead of sending again."""
        message.provider_message_id = accepted.sid
        # When we learned it; Twilio's own date_created is on Twilio's clock.
        message.sent_at = clock_now()
        message.next_attempt_at = None
        message.error_code = None
        conversation.last_outbound_at = message.sent_at
        # Its status callbacks may have come and gone while no row held the SID: take the status from the lookup.
        status = TWILIO_STATUS_MAP.get(accepted.status.lower())
        if status is not None and status_transition(message.delivery_status, status):
            message.delivery_status = status
            if status == "failed" and accepted.error_code:
                message.error_code = accepted.error_code[:64]
        SEND_ATTEMPTS.labels("reconciled").inc()
        log.info(
            "message %s to %s: an ambiguous attempt was accepted as %s (%s); not sent again",
            message.id,
            mask(contact.whatsapp_e164),
            accepted.sid,
            accepted.status,
        )
        return lambda: self.transport.committed(outbound, SendResult(sid=accepted.sid))

    def _on_error(self, session: Session, message: Message, contact: Contact, error: SendError) -> None:
        SEND_FAILURES.labels(error.code).inc()
        log.warning(
            "send of message %s to %s failed (attempt %s): %s %s",
            message.id,
            mask(contact.whatsapp_e164),
            message.attempts,
            error.code,
            mask(error.message),
        )
        if error.kind is ErrorClass.RETRYABLE:
            # Out of budget after an ambiguous send: not dead-lettered yet, the next pass looks it up first.
            if message.attempts >= self.cfg.send_max_attempts and not error.ambiguous:
                reason = f"gave up after {message.attempts} attempts; last error {error.code}: {error.message}"
                if (message.payload_json or {}).get("ambiguous_since"):
                    # Replaying it is safe: the replayed message is looked up again before it is sent.
                    reason += "; an earlier attempt timed out and may have been accepted by Twilio"
                self._fail(session, message, contact, code=error.code, reason=reason, dead_letter=True)
                return
            delay = backoff_seconds(
                message.attempts, self.cfg.send_backoff_base_seconds, self.cfg.send_backoff_max_seconds, self._rng
            )
            if error.ambiguous:
                # A request we gave up on may still be in Twilio's hands: give it one more client timeout to
                # show up in the list before we look, or the lookup would miss it and we would send twice.
                delay = max(delay, self.cfg.twilio_timeout_seconds)
            message.next_attempt_at = clock_now() + timedelta(seconds=delay)
            message.error_code = error.code  # the last error stays visible while the message waits
            SEND_ATTEMPTS.labels("retry").inc()
            return
        if error.kind is ErrorClass.OUTSIDE_WINDOW:
            # Our window bookkeeping said "open" and Twilio disagrees: never retry it as free text.
            self._fail(session, message, contact, code=error.code, reason=error.message, dead_letter=False)
            audit.record(
                session,
                contact.id,
                "policy_blocked_send",
                reason="twilio_outside_service_window",
                error_code=error.code,
                message_id=message.id,
                stage="provider",
            )
            POLICY_BLOCKS.labels("twilio_outside_service_window").inc()
            return
        if error.kind is ErrorClass.OPTED_OUT:
            self._fail(session, message, contact, code=error.code, reason=error.message, dead_letter=False)
            if contact.consent_status != "revoked":  # revoking again would confirm the opt-out once more
                from leadbot.services import consent

                consent.revoke(session, contact, source="twilio_error")
            return
        self._fail(session, message, contact, code=error.code, reason=error.message, dead_letter=True)

    def _fail(
        self, session: Session, message: Message, contact: Contact, *, code: str, reason: str, dead_letter: bool
    ) -> None:
        message.delivery_status = "failed"
        message.error_code = code[:64]
        message.next_attempt_at = None
        if dead_letter:
            session.add(
                DeadLetter(
                    kind="outbound_message",
                    message_id=message.id,
                    reason=mask(reason) or code,
                    error_code=code[:64],
                    attempts=message.attempts or 0,
                    created_at=clock_now(),
                )
            )
            DEAD_LETTERS.labels("outbound_message").inc()
            SEND_ATTEMPTS.labels("dead_letter").inc()
            log.error("message %s to %s dead-lettered: %s", message.id, mask(contact.whatsapp_e164), mask(reason))
        else:
            SEND_ATTEMPTS.labels("failed").inc()


def _unrecorded(session: Session, matches: tuple[AcceptedMessage, ...]) -> AcceptedMessage | None:
    """The oldest match whose SID no row holds yet. A recorded SID is an earlier message of ours with the same
    text (the same question asked twice, a nudge sent yesterday), not a lost attempt of this one."""
    if not matches:
        return None
    recorded = set(
        session.execute(
            select(Message.provider_message_id).where(
                Message.channel == CHANNEL, Message.provider_message_id.in_([m.sid for m in matches])
            )
        ).scalars()
    )
    return next((m for m in matches if m.sid not in recorded), None)


def refresh_queue_gauges(engine: Engine | None = None) -> tuple[int, float]:
    """Queue depth (waiting messages) and lag (age of the oldest due one) for /metrics."""
    now = clock_now()
    with session_factory(engine or get_engine())() as session:
        depth = session.execute(select(func.count()).select_from(Message).where(_waiting())).scalar_one()
        oldest = session.execute(
            select(func.min(Message.send_at)).where(_waiting(), Message.send_at <= now)
        ).scalar_one_or_none()
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    OUTBOUND_QUEUE_DEPTH.set(depth)
    OUTBOUND_QUEUE_LAG.set(lag)
    return depth, lag

