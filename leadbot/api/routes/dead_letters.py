"""Dead letters: what the sender, the CRM outbox worker and the scheduler gave up on; list and replay."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from leadbot.api.deps import db_session, require_api_key
from leadbot.db.models import DeadLetter
from leadbot.services import dead_letters

router = APIRouter(prefix="/dead-letters", tags=["dead letters"], dependencies=[Depends(require_api_key)])


class DeadLetterView(BaseModel):
    id: int
    kind: str
    message_id: int | None
    outbox_id: int | None
    task_id: int | None
    reason: str
    error_code: str | None
    attempts: int
    created_at: datetime
    replayed_at: datetime | None


def _view(letter: DeadLetter) -> DeadLetterView:
    return DeadLetterView.model_validate(letter, from_attributes=True)


@router.get("", response_model=list[DeadLetterView])
def list_dead_letters(
    kind: Literal["outbound_message", "crm_sync", "task"] | None = Query(None),
    include_replayed: bool = Query(False),
    session: Session = Depends(db_session),
) -> list[DeadLetterView]:
    """Newest first; replayed ones only with `include_replayed=true`."""
    return [_view(letter) for letter in dead_letters.list_dead_letters(session, kind, include_replayed)]


@router.post(
    "/{dead_letter_id}/replay", response_model=DeadLetterView, responses={404: {"description": "Unknown dead letter"}}
)
def replay(
    dead_letter_id: Annotated[int, Path(gt=0, le=2**31 - 1)], session: Session = Depends(db_session)
) -> DeadLetterView:
    """Put the item back into its worker's queue (idempotent). An outbound message passes the policy gate again."""
    try:
        letter = dead_letters.replay(session, dead_letter_id)
    except dead_letters.DeadLetterNotFound as exc:
        raise HTTPException(404, "unknown dead letter") from exc
    session.commit()
    return _view(letter)
