"""Rasa tracker and lock stores configured by one URL each (runs inside the Rasa 3.6 process).

- `UrlSQLTrackerStore`: Rasa's SQL tracker store, configured from `RASA_TRACKER_URL` (PostgreSQL in production
  and tests, a SQLite file in the embedded default), so one `endpoints.yml` serves every environment.
- `AtomicLockStore`: Rasa's ticket lock, but every read-modify-write on Redis is one atomic transaction
  (WATCH/MULTI). Rasa 3.6's `RedisLockStore` reads then writes, so two replicas can issue the same ticket
  (RasaHQ/rasa #9213). With no `REDIS_URL` (embedded default, one process) it keeps the lock in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from rasa.core.lock import TicketLock
from rasa.core.lock_store import InMemoryLockStore, LockError, LockStore
from rasa.core.tracker_store import SQLTrackerStore
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

_KEY_PREFIX = "leadbot:lock:"
_MAX_OPTIMISTIC_RETRIES = 50


class UrlSQLTrackerStore(SQLTrackerStore):
    def __init__(self, host: str | None = None, domain: Any = None, event_broker: Any = None, **kwargs: Any) -> None:
        if not host:
            raise ValueError("UrlSQLTrackerStore needs `url` (RASA_TRACKER_URL) in endpoints.yml")
        url = make_url(host)
        super().__init__(
            domain=domain,
            dialect=url.drivername,
            host=url.host,
            port=url.port,
            db=url.database or "rasa.db",
            username=url.username,
            password=url.password,
            event_broker=event_broker,
            query=dict(url.query) or None,
        )


class AtomicLockStore(LockStore):
    def __init__(self, endpoint_config: EndpointConfig | None = None) -> None:
        url = (endpoint_config.url if endpoint_config else None) or ""
        self._memory: InMemoryLockStore | None = None
        self.red: Any = None
        if url:
            import redis

            self.red = redis.Redis.from_url(url, socket_timeout=10)
        else:
            self._memory = InMemoryLockStore()
        super().__init__()

    def _key(self, conversation_id: str) -> str:
        return _KEY_PREFIX + conversation_id

    def get_lock(self, conversation_id: str) -> TicketLock | None:
        if self._memory is not None:
            return self._memory.get_lock(conversation_id)
        raw = self.red.get(self._key(conversation_id))
        return TicketLock.from_dict(json.loads(raw)) if raw else None

    def delete_lock(self, conversation_id: str) -> None:
        if self._memory is not None:
            self._memory.delete_lock(conversation_id)
            return
        self.red.delete(self._key(conversation_id))

    def save_lock(self, lock: TicketLock) -> None:
        if self._memory is not None:
            self._memory.save_lock(lock)
            return
        self.red.set(self._key(lock.conversation_id), lock.dumps())

    def _atomic(self, conversation_id: str, change: Callable[[TicketLock | None], TicketLock | None]) -> Any:
        """Apply `change` to the stored lock in one Redis transaction; retried when another writer intervened."""

        import redis

        key = self._key(conversation_id)
        for _ in range(_MAX_OPTIMISTIC_RETRIES):
            with self.red.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    lock = TicketLock.from_dict(json.loads(raw)) if raw else None
                    result = change(lock)
                    pipe.multi()
                    if result is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, result.dumps())
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
        raise LockError(f"lock for a conversation stayed contended after {_MAX_OPTIMISTIC_RETRIES} attempts")

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = 60) -> int:
        if self._memory is not None:
            return self._memory.issue_ticket(conversation_id, lock_lifetime)
        issued: list[int] = []

        def take(lock: TicketLock | None) -> TicketLock:
            lock = lock or TicketLock(conversation_id)
            issued[:] = [lock.issue_ticket(lock_lifetime)]
            return lock

        self._atomic(conversation_id, take)
        return issued[0]

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        if self._memory is not None:
            self._memory.finish_serving(conversation_id, ticket_number)
            return

        def release(lock: TicketLock | None) -> TicketLock | None:
            if lock is not None:
                lock.remove_ticket_for(ticket_number)
            return lock

        self._atomic(conversation_id, release)

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        if self._memory is not None:
            self._memory.cleanup(conversation_id, ticket_number)
            return

        def release_and_drop_when_idle(lock: TicketLock | None) -> TicketLock | None:
            if lock is None:
                return None
            lock.remove_ticket_for(ticket_number)
            return lock if lock.tickets else None

        self._atomic(conversation_id, release_and_drop_when_idle)

    def update_lock(self, conversation_id: str) -> None:
        if self._memory is not None:
            self._memory.update_lock(conversation_id)
            return

        def drop_expired(lock: TicketLock | None) -> TicketLock | None:
            if lock is not None:
                lock.remove_expired_tickets()
            return lock

        self._atomic(conversation_id, drop_expired)
