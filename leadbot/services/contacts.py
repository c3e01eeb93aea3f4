"""Contacts and their current conversation: race-safe get-or-create on the unique keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.db.models import Contact, Conversation


def get_or_create_contact(session: Session, e164: str, first_name: str | None = None) -> Contact:
    """The contact for an E.164 number; two concurrent first messages still yield one row (unique constraint)."""
    contact = session.execute(select(Contact).where(Contact.whatsapp_e164 == e164)).scalar_one_or_none()
    if contact is not None:
        if first_name and not contact.first_name:
            contact.first_name = first_name
        return contact
    try:
        with session.begin_nested():
            contact = Contact(whatsapp_e164=e164, first_name=first_name or None, created_at=now(), updated_at=now())
            session.add(contact)
    except IntegrityError:
        contact = session.execute(select(Contact).where(Contact.whatsapp_e164 == e164)).scalar_one()
    return contact


def current_conversation(session: Session, contact: Contact, *, lock: bool = False) -> Conversation:
    """The contact's open conversation (the newest one that is not closed), created when there is none.

    `lock=True` takes a row lock (PostgreSQL) so that writers of one conversation are serialised.
    """
    query = (
        select(Conversation)
        .where(Conversation.contact_id == contact.id, Conversation.status != "closed")
        .order_by(Conversation.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    conversation = session.execute(query).scalar_one_or_none()
    if conversation is None:
        conversation = Conversation(contact_id=contact.id, created_at=now(), updated_at=now())
        session.add(conversation)
        session.flush()
    return conversation


def find_contact(session: Session, *, contact_id: int | None = None, e164: str | None = None) -> Contact | None:
    if contact_id is not None:
        return session.get(Contact, contact_id)
    if e164 is not None:
        return session.execute(select(Contact).where(Contact.whatsapp_e164 == e164)).scalar_one_or_none()
    return None
