"""Request types shared by the ops API's routes: safe strings, ids, and "which contact" bodies."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from leadbot.db.models import Contact
from leadbot.phone import InvalidPhoneNumber, normalize_e164
from leadbot.services import contacts

# PostgreSQL rejects NUL in text and overflows on ids beyond INTEGER: both are a 422 here, never a 500.
NO_NUL = r"^[^\x00]*$"
DbId = Annotated[int, Field(gt=0, le=2**31 - 1)]


class StrictModel(BaseModel):
    """Unknown fields are a 422: a typo in a field name must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ContactRef(StrictModel):
    """Exactly one of `contact_id` or `whatsapp_e164` identifies the contact."""

    contact_id: DbId | None = None
    whatsapp_e164: Annotated[str, Field(pattern=NO_NUL, max_length=32)] | None = Field(
        default=None, description="The lead's WhatsApp number; E.164 preferred, German local formats accepted"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ContactRef:
        if (self.contact_id is None) == (self.whatsapp_e164 is None):
            raise ValueError("give exactly one of contact_id or whatsapp_e164")
        if self.whatsapp_e164 is not None:
            try:
                self.whatsapp_e164 = normalize_e164(self.whatsapp_e164)
            except InvalidPhoneNumber as exc:
                raise ValueError(f"whatsapp_e164: {exc}") from exc
        return self


def contact_or_404(session: Session, ref: ContactRef) -> Contact:
    contact = contacts.find_contact(session, contact_id=ref.contact_id, e164=ref.whatsapp_e164)
    if contact is None:
        raise HTTPException(404, "unknown contact")
    return contact


def get_contact_or_404(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise HTTPException(404, "unknown contact")
    return contact
