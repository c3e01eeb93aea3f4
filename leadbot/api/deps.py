"""Shared dependencies of the ops API: API-key auth, a database session per request, idempotency keys."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from leadbot.config import settings
from leadbot.db.models import IdempotencyKey
from leadbot.db.session import session_scope

_bearer = HTTPBearer(auto_error=False)


def require_api_key(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """`Authorization: Bearer <OPS_API_KEY>`: 401 when missing, 403 when wrong."""
    expected = settings().ops_api_key
    if credentials is None or not credentials.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key", headers={"WWW-Authenticate": "Bearer"})
    if not expected or not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid API key")


def db_session() -> Iterator[Session]:
    """One unit of work per request: committed when the handler returns, rolled back on any error."""
    with session_scope() as session:
        yield session


class Idempotency:
    """Replay protection for creating endpoints (`Idempotency-Key` header).

    Usage in a handler: `if (replayed := idem.replay(body)) is not None: return replayed`; else do the work and call
    `idem.store(body, status_code, response)` in the same session, so the key and the effect commit together.
    The same key with a different body is a 422.
    """

    def __init__(self, request: Request, session: Session, key: str | None) -> None:
        self.endpoint = request.url.path
        self.session = session
        self.key = key

    @staticmethod
    def _hash(body: Any) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()

    def lookup(self, body: Any) -> IdempotencyKey | None:
        if not self.key:
            return None
        row = self.session.execute(
            select(IdempotencyKey).where(IdempotencyKey.key == self.key, IdempotencyKey.endpoint == self.endpoint)
        ).scalar_one_or_none()
        if row is not None and row.request_hash != self._hash(body):
            raise HTTPException(422, "Idempotency-Key was already used with a different request body")
        return row

    def replay(self, body: Any) -> JSONResponse | None:
        """The first answer to this key and body, to return as it was; None when the request is new."""
        cached = self.lookup(body)
        return None if cached is None else JSONResponse(cached.response_json, status_code=cached.status_code)

    def store(self, body: Any, status_code: int, response: Any) -> None:
        if not self.key:
            return
        try:
            with self.session.begin_nested():
                self.session.add(
                    IdempotencyKey(
                        key=self.key,
                        endpoint=self.endpoint,
                        request_hash=self._hash(body),
                        status_code=status_code,
                        response_json=response,
                    )
                )
        except IntegrityError as exc:  # a concurrent request with the same key won: roll this one back
            raise HTTPException(409, "a request with this Idempotency-Key is in progress or done") from exc


def idempotency(
    request: Request,
    session: Session = Depends(db_session),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=200),
) -> Idempotency:
    return Idempotency(request, session, idempotency_key)
