"""Dead letters: what the workers gave up on, for the team to inspect and replay (issue 3 point 12).

Replaying puts the item back where its worker picks it up; nothing is sent from here. An outbound message goes
back into its conversation's queue at its original position (its id) and passes the policy gate again when the
sender takes it, so a replay can never send what the rules forbid now.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.db.models import CrmOutbox, DeadLetter, Message, TaskScheduled


class DeadLetterNotFound(LookupError):
    pass


def list_dead_letters(session: Session, kind: str | None = None, include_replayed: bool = False) -> list[DeadLetter]:
    """Newest first."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc())
    if kind is not None:
        query = query.where(DeadLetter.kind == kind)
    if not include_replayed:
        query = query.where(DeadLetter.replayed_at.is_(None))
    return list(session.execute(query).scalars())


def replay(session: Session, dead_letter_id: int) -> DeadLetter:
    """Re-queue the item of a dead letter and mark it replayed. Idempotent: a second replay changes nothing.

    The row lock makes two concurrent replays of one dead letter re-queue it once. The caller commits.
    """
    letter = session.execute(
        select(DeadLetter).where(DeadLetter.id == dead_letter_id).with_for_update()
    ).scalar_one_or_none()
    if letter is None:
        raise DeadLetterNotFound(f"dead letter {dead_letter_id} not found")
    if letter.replayed_at is not None:
        return letter
    current = now()
    if letter.kind == "outbound_message" and letter.message_id is not None:
        message = session.get(Message, letter.message_id, with_for_update=True)
        # Only a message Twilio never accepted goes back; an accepted one would be sent twice.
        if message is not None and message.provider_message_id is None:
            message.delivery_status = "queued"
            message.error_code = None
            message.attempts = 0
            message.next_attempt_at = None
            message.send_at = current
    elif letter.kind == "crm_sync" and letter.outbox_id is not None:
        item = session.get(CrmOutbox, letter.outbox_id, with_for_update=True)
        if item is not None:
            item.status, item.attempts, item.next_attempt_at, item.last_error = "pending", 0, current, None
    elif letter.kind == "task" and letter.task_id is not None:
        task = session.get(TaskScheduled, letter.task_id, with_for_update=True)
        if task is not None:
            task.status, task.attempts, task.last_error = "pending", 0, None
            task.lease_expires_at, task.locked_by = None, None
    letter.replayed_at = current
    session.flush()
    return letter
