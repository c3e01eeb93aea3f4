"""The ops API (FastAPI): one documented HTTP service for operators, the CRM side and DSGVO requests.

Every endpoint needs `Authorization: Bearer <OPS_API_KEY>` except `GET /health` and `GET /metrics`. The OpenAPI
schema is served at `/openapi.json`, interactive docs at `/docs`.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from leadbot.api.deps import require_api_key
from leadbot.api.routes import (
    calendar,
    crm,
    dashboard,
    dead_letters,
    handover,
    health,
    leads,
    messages,
    privacy,
    simulator,
)

DESCRIPTION = """
Operations API of leadbot, the WhatsApp lead qualification bot.

* Authentication: `Authorization: Bearer <OPS_API_KEY>` on every endpoint except `/health` and `/metrics`
  (401 when missing, 403 when wrong).
* Creating endpoints accept an `Idempotency-Key` header: a repeated request with the same key and body gets the
  first answer back; the same key with another body is a 422.
* Every outbound message passes the policy gate (consent, 24 h service window, approved templates, quiet hours,
  human ownership); a blocked message is still recorded and the answer names the reason.
"""


def create_app() -> FastAPI:
    app = FastAPI(title="leadbot ops API", version="1.0.0", description=DESCRIPTION)
    app.include_router(health.router)
    app.include_router(leads.router, dependencies=[Depends(require_api_key)])
    app.include_router(messages.router)
    app.include_router(handover.router)
    app.include_router(crm.router)
    app.include_router(calendar.router)
    app.include_router(privacy.router)
    app.include_router(dead_letters.router)
    # Web pages (the page files are public, their data needs the API key); the simulator 404s unless enabled.
    app.include_router(dashboard.router)
    app.include_router(simulator.router)
    return app


app = create_app()
