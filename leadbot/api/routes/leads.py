"""`POST /leads`: opt-in capture (issue 5 point 1), the start trigger of the lead flow.

Mounted by the ops API app (`leadbot.api.app`) as `from leadbot.api.routes.leads import router`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from leadbot.api.deps import Idempotency, idempotency, require_api_key
from leadbot.services.leads import DEFAULT_TIMEZONE, InvalidOptIn, OptInData, opt_in

router = APIRouter(tags=["leads"])


class LeadOptIn(BaseModel):
    """The seed's contact fields (§3 `contacts`), as a form or landing page submits them."""

    model_config = ConfigDict(extra="forbid")

    whatsapp_e164: str = Field(..., max_length=40, examples=["+4915112345678"])
    first_name: str | None = Field(None, max_length=100, examples=["Lena"])
    timezone: str = Field(DEFAULT_TIMEZONE, max_length=64, examples=["Europe/Berlin"])
    consent_source: str = Field(..., max_length=200, examples=["landingpage:pilot-2026"])
    consent_text_version: str = Field(..., max_length=50, examples=["v3"])
    consent_timestamp: datetime = Field(..., examples=["2026-11-25T10:00:00+01:00"])


class LeadOptInResponse(BaseModel):
    contact_id: int
    conversation_id: int
    welcome_task_id: int
    welcome_run_at: datetime
    contact_created: bool
    welcome_scheduled: bool


@router.post(
    "/leads",
    status_code=201,
    response_model=LeadOptInResponse,
    dependencies=[Depends(require_api_key)],
    responses={422: {"description": "invalid input, nothing written"}},
)
def create_lead(body: LeadOptIn, idem: Idempotency = Depends(idempotency)) -> Any:
    request_body = body.model_dump(mode="json")
    if (replayed := idem.replay(request_body)) is not None:
        return replayed
    try:
        result = opt_in(idem.session, OptInData(**body.model_dump()))
    except InvalidOptIn as exc:
        # Raised before anything is written; the request's session is rolled back anyway.
        raise HTTPException(422, detail=[{"loc": ["body", exc.field], "msg": exc.reason, "type": "value_error"}]) \
            from None
    response = LeadOptInResponse(
        contact_id=result.contact_id,
        conversation_id=result.conversation_id,
        welcome_task_id=result.welcome_task_id,
        welcome_run_at=result.welcome_run_at,
        contact_created=result.contact_created,
        welcome_scheduled=result.welcome_scheduled,
    ).model_dump(mode="json")
    idem.store(request_body, 201, response)
    return JSONResponse(response, status_code=201)
