"""Our Rasa channel for WhatsApp over Twilio (issue 3 points 1-9, issue 10 points 1, 2, 4, 9).

Mounted by Rasa under `/webhooks/whatsapp/` (credentials.yml: `leadbot.channel.whatsapp.WhatsAppInput:`):

- `POST /inbound`: Twilio's incoming-message webhook (a number or a Messaging Service). The signature is checked
  against `PUBLIC_BASE_URL + path + query` (what Twilio signed, whatever the internal host, port or scheme), the
  message is persisted (deduplicated by `MessageSid`), and the webhook is acknowledged with `<Response/>` before
  the dialogue turn runs.
- `POST /status`: Twilio's status callbacks; statuses only move forward.
- `GET /health`, `GET /metrics` (Prometheus exposition of this process).

Turns run in a per-conversation drain loop: the conversation's oldest unprocessed inbound message is processed,
then the next, one at a time and in arrival order. Across Rasa replicas a PostgreSQL advisory lock
(`pg_try_advisory_lock`) makes one process the drainer of a conversation; whoever persists a message triggers a
drain after a short reorder window (so a burst arrives first), and the drainer re-checks after releasing the lock
so no wake-up is lost. A turn's replies are enqueued and the inbound row marked processed in ONE transaction after
`on_new_message` returns, so a crash never loses a message (unprocessed inbound is replayed on start and by a
periodic sweep) and never double-sends a reply.

The output side never calls Twilio: every bot message goes to `leadbot.services.outbound.enqueue`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any
from urllib.parse import parse_qs

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from leadbot import metrics, phone
from leadbot.clock import now as clock_now
from leadbot.config import settings
from leadbot.db.models import Conversation
from leadbot.domain.policy import Purpose
from leadbot.services import contacts, crm_outbox, handover, inbound, outbound

logger = logging.getLogger(__name__)

CHANNEL_NAME = "whatsapp"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
MEDIA_REPLY = (
    "Danke dir! Bilder, Sprachnachrichten und Dateien kann ich hier leider nicht auswerten. "
    "Schreib mir deine Antwort bitte kurz als Text 🙂"
)
# A turn that keeps failing (Rasa or the action server down) is retried, then given up so the queue moves on.
MAX_TURN_ATTEMPTS = 3
# The replay on start and the sweep leave alone what another replica may be handling right now.
REPLAY_MIN_AGE = timedelta(seconds=5)
# Namespace of our advisory locks (two-key form: namespace, conversation id).
ADVISORY_NAMESPACE = 7_311

_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="leadbot-channel")


async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking database work off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, partial(func, *args, **kwargs))


# --- Output side ------------------------------------------------------------------------------------------------


def _buttons(raw: Any) -> list[dict[str, str]] | None:
    if not raw:
        return None
    result = []
    for button in raw:
        if not isinstance(button, dict):
            continue
        title = str(button.get("title") or button.get("payload") or "").strip()
        payload = str(button.get("payload") or title).strip()
        if title:
            result.append({"title": title, "payload": payload})
    return result or None


def _parse_deadline(raw: Any) -> datetime | None:
    if not raw:
        return None
    moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("template deadline needs a time zone")
    return moment


def outbound_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One Rasa bot message (`BotUttered.message()`) as keyword arguments for `outbound.enqueue`, in order."""
    items: list[dict[str, Any]] = []
    text = (message.get("text") or "").strip()
    buttons = _buttons(message.get("buttons") or message.get("quick_replies"))
    image = message.get("image")
    if text or buttons:
        item: dict[str, Any] = {"text": text or "Bitte wähle:", "buttons": buttons}
        if image and not buttons:
            item["media_url"] = str(image)
            image = None
        items.append(item)
    if image:
        items.append({"text": None, "media_url": str(image)})
    attachment = message.get("attachment")
    if isinstance(attachment, str) and attachment.startswith("http") and attachment != message.get("image"):
        items.append({"text": None, "media_url": attachment})
    for element in message.get("elements") or []:
        if isinstance(element, dict) and (element.get("title") or element.get("subtitle")):
            title = " – ".join(str(element[key]) for key in ("title", "subtitle") if element.get(key))
            items.append({"text": title, "buttons": _buttons(element.get("buttons"))})
    custom = message.get("custom")
    if isinstance(custom, dict):
        if custom.get("template"):
            items.append(
                {
                    "template_name": str(custom["template"]),
                    "variables": custom.get("variables") or {},
                    "deadline": _parse_deadline(custom.get("deadline")),
                    "purpose": Purpose(custom.get("purpose") or Purpose.CONVERSATION.value),
                }
            )
        elif custom.get("text") or custom.get("media_url"):
            items.append(
                {
                    "text": custom.get("text"),
                    "buttons": _buttons(custom.get("buttons")),
                    "media_url": custom.get("media_url"),
                }
            )
        else:
            logger.warning("custom bot message without template/text/media_url dropped: keys %s", sorted(custom))
    elif custom is not None:
        logger.warning("custom bot message of type %s dropped", type(custom).__name__)
    return items


def asked_question(items: list[dict[str, Any]]) -> bool:
    """Did the turn end with a question (a text ending in "?" or a message with buttons)?"""
    if not items:
        return False
    last = items[-1]
    if last.get("buttons"):
        return True
    if last.get("template_name"):
        from leadbot.domain.templates import get_template

        template = get_template(last["template_name"])
        return bool(template.buttons) or template.body.rstrip().endswith("?")
    return (last.get("text") or "").rstrip().endswith("?")


def _enqueue_items(
    session: Any,
    conversation: Conversation,
    items: list[dict[str, Any]],
    *,
    not_before: datetime | None,
    sender_role: str = "bot",
) -> None:
    for item in items:
        kwargs = {key: value for key, value in item.items() if value is not None}
        outbound.enqueue(session, conversation, not_before=not_before, sender_role=sender_role, **kwargs)


def _enqueue_direct(recipient_id: str, items: list[dict[str, Any]]) -> None:
    """Bot messages outside an inbound turn (Rasa's trigger_intent API with `output_channel=whatsapp`)."""
    from leadbot.db.session import session_scope

    try:
        e164 = phone.e164_from_sender_id(recipient_id)
    except phone.InvalidPhoneNumber:
        logger.warning("bot message for a non-WhatsApp sender id dropped: %s", phone.mask(recipient_id))
        return
    with session_scope() as session:
        contact = contacts.find_contact(session, e164=e164)
        if contact is None:
            logger.warning("bot message for an unknown contact dropped: %s", phone.mask(e164))
            return
        conversation = contacts.current_conversation(session, contact, lock=True)
        _enqueue_items(session, conversation, items, not_before=None)


class WhatsAppOutput(OutputChannel):
    """Turns bot messages into outbound queue rows (never Twilio).

    `collect=True` (inside an inbound turn): messages are gathered and enqueued by the turn runner in one
    transaction with the inbound row's `processed_at`. Otherwise (trigger_intent) each message is enqueued at once,
    in the order Rasa produces them.
    """

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.items: list[dict[str, Any]] = []

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        await self._deliver(recipient_id, outbound_items(dict(message)))

    async def _deliver(self, recipient_id: str, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        if self.collect:
            self.items.extend(items)
        else:
            await run_sync(_enqueue_direct, recipient_id, items)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self._deliver(recipient_id, outbound_items({"text": text}))

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self._deliver(recipient_id, outbound_items({"text": text, "buttons": buttons}))

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        await self._deliver(recipient_id, outbound_items({"image": image}))

    async def send_attachment(self, recipient_id: str, attachment: str, **kwargs: Any) -> None:
        await self._deliver(recipient_id, outbound_items({"attachment": attachment}))

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        await self._deliver(recipient_id, outbound_items({"custom": json_message}))


# --- Database steps of the turn runner (sync, run in the executor) ------------------------------------------------


def _session_scope() -> Any:
    from leadbot.db.session import session_scope

    return session_scope()


def _persist(form: inbound.InboundForm) -> inbound.PersistResult:
    with _session_scope() as session:
        return inbound.persist(session, form)


def _next(conversation_id: int) -> inbound.PendingInbound | None:
    with _session_scope() as session:
        return inbound.next_unprocessed(session, conversation_id)


def _has_unprocessed(conversation_id: int) -> bool:
    with _session_scope() as session:
        return inbound.has_unprocessed(session, conversation_id)


def _replay_candidates() -> list[int]:
    with _session_scope() as session:
        return inbound.conversations_with_unprocessed(session, clock_now() - REPLAY_MIN_AGE)


def _opt_out(pending: inbound.PendingInbound) -> None:
    from leadbot.services import consent

    with _session_scope() as session:
        if inbound.lock_unprocessed(session, pending.message_id) is None:
            return
        conversation = session.get(Conversation, pending.conversation_id)
        consent.revoke(session, conversation.contact, source="whatsapp_opt_out")
        inbound.mark_processed(session, pending.message_id)


def _forward_to_human(pending: inbound.PendingInbound) -> None:
    """A human owns the conversation: the message goes to the human side (CRM activity), the bot stays silent."""
    with _session_scope() as session:
        if inbound.lock_unprocessed(session, pending.message_id) is None:
            return
        crm_outbox.enqueue(
            session,
            pending.contact_id,
            "activity",
            {
                "kind": "inbound_message",
                "conversation_id": pending.conversation_id,
                "message_id": pending.message_id,
                "message_type": pending.message_type,
                "text": pending.text,
                "received_at": clock_now().isoformat(),
            },
        )
        inbound.mark_processed(session, pending.message_id)


def _skip(pending: inbound.PendingInbound, error_code: str | None = None) -> None:
    with _session_scope() as session:
        inbound.mark_processed(session, pending.message_id, error_code)


def _give_up_turn(pending: inbound.PendingInbound) -> None:
    """The bot cannot answer this message (Rasa or the action server keeps failing): mark it, and hand the lead to
    the team, which is notified and bound by the handover SLA, instead of leaving the lead waiting in silence."""
    with _session_scope() as session:
        inbound.mark_processed(session, pending.message_id, "turn_failed")
        conversation = session.get(Conversation, pending.conversation_id)
        if conversation is not None and conversation.owner == "bot":
            handover.start(session, conversation, "turn_failed")


def _record_failure(pending: inbound.PendingInbound) -> int:
    with _session_scope() as session:
        return inbound.record_failed_attempt(session, pending.message_id)


def _finish_turn(pending: inbound.PendingInbound, items: list[dict[str, Any]]) -> bool:
    """Enqueue the turn's replies (one reply delay for the whole turn, Rasa's order) and mark the inbound processed.

    One transaction: either both happen or neither (then the turn is replayed).
    """
    with _session_scope() as session:
        message = inbound.lock_unprocessed(session, pending.message_id)
        if message is None:
            logger.warning("inbound %s was already processed; replies of this run dropped", pending.message_id)
            return False
        conversation = session.get(Conversation, pending.conversation_id)
        # One human-like delay per turn, the same `not_before` for all its messages (they keep Rasa's order).
        not_before = clock_now() + outbound.draw_reply_delay()
        # A turn that itself handed the conversation over (its action set owner=human) still delivers its own
        # announcement: the bot owned the conversation when the lead wrote.
        role = "system" if pending.owner == "bot" and conversation.owner == "human" else "bot"
        _enqueue_items(session, conversation, items, not_before=not_before, sender_role=role)
        inbound.mark_processed(session, pending.message_id)
        inbound.call_task_hook("after_bot_turn", session, conversation, asked_question=asked_question(items))
        return True


def _health() -> None:
    import sqlalchemy as sa

    with _session_scope() as session:
        session.execute(sa.text("SELECT 1"))


# --- Per-conversation mutual exclusion ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _lock_engine() -> Any:
    """Advisory locks are held on connections for a whole drain: their own pool, so webhooks never wait for one."""
    from leadbot.db.session import create_db_engine

    return create_db_engine(settings().database_url)


@dataclass
class _Held:
    conversation_id: int
    connection: Any = None
    local: asyncio.Lock | None = None


class ConversationLocks:
    """One drainer per conversation: a PostgreSQL advisory lock (all replicas), or an asyncio lock (SQLite)."""

    def __init__(self) -> None:
        self._local: dict[int, asyncio.Lock] = {}

    @staticmethod
    def _postgres() -> bool:
        from leadbot.db.session import is_sqlite

        return not is_sqlite(settings().database_url)

    async def try_acquire(self, conversation_id: int) -> _Held | None:
        if self._postgres():
            connection = await run_sync(self._pg_try_lock, conversation_id)
            return _Held(conversation_id, connection=connection) if connection is not None else None
        lock = self._local.setdefault(conversation_id, asyncio.Lock())
        if lock.locked():
            return None
        await lock.acquire()
        return _Held(conversation_id, local=lock)

    async def release(self, held: _Held) -> None:
        if held.connection is not None:
            await run_sync(self._pg_unlock, held.connection, held.conversation_id)
        elif held.local is not None:
            held.local.release()
            if not held.local.locked():
                self._local.pop(held.conversation_id, None)

    @staticmethod
    def _pg_try_lock(conversation_id: int) -> Any:
        import sqlalchemy as sa

        connection = _lock_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:ns, :id)"), {"ns": ADVISORY_NAMESPACE, "id": conversation_id}
            ).scalar()
        except BaseException:
            connection.close()
            raise
        if not got:
            connection.close()
            return None
        return connection

    @staticmethod
    def _pg_unlock(connection: Any, conversation_id: int) -> None:
        import sqlalchemy as sa

        try:
            connection.execute(
                sa.text("SELECT pg_advisory_unlock(:ns, :id)"), {"ns": ADVISORY_NAMESPACE, "id": conversation_id}
            )
            connection.close()
        except Exception:  # the session-level lock dies with the connection
            logger.exception("advisory unlock failed; dropping the connection")
            connection.invalidate()
            connection.close()


# --- Input side -------------------------------------------------------------------------------------------------


class _Params:
    """Twilio's RequestValidator wants `getall`; Sanic's form gives name -> list of values."""

    def __init__(self, form: Any) -> None:
        self._data: dict[str, list[str]] = {}
        for key in form or {}:
            values = form.getlist(key) if hasattr(form, "getlist") else form[key]
            if not isinstance(values, (list, tuple)):
                values = [values]
            self._data[key] = [str(value) for value in values]

    def __iter__(self) -> Any:
        return iter(self._data)

    def getall(self, name: str) -> list[str]:
        return self._data.get(name, [])

    def get(self, name: str, default: Any = None) -> Any:
        values = self._data.get(name)
        return values[0] if values else default


def public_url(request: Request) -> str:
    """What Twilio signed: PUBLIC_BASE_URL + path + query, independent of the internal host, port and scheme."""
    url = settings().public_base_url + request.path
    if request.query_string:
        url += "?" + request.query_string
    return url


def signature_valid(request: Request, params: _Params) -> bool:
    from twilio.request_validator import RequestValidator

    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = RequestValidator(settings().webhook_auth_token)
    try:
        return bool(validator.validate(public_url(request), params, signature))
    except Exception:  # a malformed signature header is just an invalid one
        return False


def _twiml(status: int = 200) -> HTTPResponse:
    return response.text(TWIML_EMPTY if status == 200 else "", status=status, content_type="text/xml")


class WhatsAppInput(InputChannel):
    """The `whatsapp` channel: inbound webhooks, status callbacks, health and metrics."""

    def __init__(self) -> None:
        self.on_new_message: Callable[[UserMessage], Awaitable[Any]] | None = None
        self.app: Any = None
        self.locks = ConversationLocks()
        self._active: set[int] = set()
        self._dirty: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        # Everything comes from the environment (leadbot.config); credentials.yml only names the channel.
        return cls()

    def get_output_channel(self) -> OutputChannel:
        return WhatsAppOutput(collect=False)

    # -- background work --

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_later(self, conversation_id: int) -> None:
        window = settings().inbound_reorder_window_ms / 1000
        if window > 0:
            await asyncio.sleep(window)
        await self.drain(conversation_id)

    async def drain(self, conversation_id: int) -> None:
        """Process the conversation's unprocessed inbound messages one at a time, oldest first."""
        if conversation_id in self._active:
            self._dirty.add(conversation_id)  # the running drain re-checks before it ends
            return
        self._active.add(conversation_id)
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, settings().inbound_parallel_conversations))
        try:
            while True:
                self._dirty.discard(conversation_id)
                # Bounded: turns are CPU work on Rasa's event loop, and each drain holds a lock connection; an
                # unbounded number would delay the webhooks' acks.
                async with self._slots:
                    held = await self.locks.try_acquire(conversation_id)
                    if held is None:
                        return  # another replica drains; it re-checks after releasing, so our message is seen
                    try:
                        stalled = await self._process_all(conversation_id)
                    finally:
                        await self.locks.release(held)
                if stalled:
                    return  # the agent is not ready: the sweep comes back to it
                # Re-check after releasing: a message persisted while we held the lock, whose own drain found the
                # lock taken, would otherwise wait for the next sweep.
                if conversation_id not in self._dirty and not await run_sync(_has_unprocessed, conversation_id):
                    return
        except Exception:
            logger.exception("drain of conversation %s failed; the sweep retries it", conversation_id)
        finally:
            self._active.discard(conversation_id)

    async def _process_all(self, conversation_id: int) -> bool:
        """Process until nothing is left (False) or the agent cannot take turns yet (True: stalled)."""
        while True:
            pending = await run_sync(_next, conversation_id)
            if pending is None:
                return False
            if not await self._process(pending):
                return True

    def _agent_ready(self) -> bool:
        agent = getattr(getattr(self.app, "ctx", None), "agent", None) if self.app is not None else None
        return agent is None or agent.is_ready()

    async def _process(self, pending: inbound.PendingInbound) -> bool:
        """Handle one inbound message; True when it is done (processed_at set)."""
        from leadbot.domain.understanding import is_opt_out

        if pending.text and is_opt_out(pending.text):
            await run_sync(_opt_out, pending)
            return True
        if pending.owner == "human":
            await run_sync(_forward_to_human, pending)
            return True
        items: list[dict[str, Any]] = []
        turn_text = pending.rasa_text
        if pending.message_type == "media":
            items.append({"text": MEDIA_REPLY})
            turn_text = pending.caption
        if not turn_text:
            if items:
                await run_sync(_finish_turn, pending, items)
            else:
                await run_sync(_skip, pending, "empty")
            return True
        if self.on_new_message is None or not self._agent_ready():
            logger.info("agent not ready: inbound %s waits for the sweep", pending.message_id)
            return False
        output = WhatsAppOutput(collect=True)
        started = time.perf_counter()
        try:
            await self.on_new_message(
                UserMessage(
                    text=turn_text,
                    output_channel=output,
                    sender_id=pending.sender_id,
                    input_channel=CHANNEL_NAME,
                    message_id=pending.provider_message_id,
                    metadata=pending.metadata,
                )
            )
        except Exception:
            attempts = await run_sync(_record_failure, pending)
            logger.exception("turn for inbound %s failed (attempt %s)", pending.message_id, attempts)
            if attempts >= MAX_TURN_ATTEMPTS:
                await run_sync(_give_up_turn, pending)
                return True
            await asyncio.sleep(min(5.0, 0.5 * 2**attempts))
            return True  # the drain loop picks the same message up again
        metrics.TURN_LATENCY.observe(time.perf_counter() - started)
        await run_sync(_finish_turn, pending, items + output.items)
        return True

    async def replay(self) -> None:
        """Drain every conversation with unprocessed inbound older than a few seconds (start and periodic sweep)."""
        try:
            conversation_ids = await run_sync(_replay_candidates)
        except Exception:
            logger.exception("replay of unprocessed inbound failed")
            return
        if conversation_ids:
            logger.info("replaying unprocessed inbound of %s conversation(s)", len(conversation_ids))
        for conversation_id in conversation_ids:
            self._spawn(self.drain(conversation_id))

    async def _sweep_forever(self) -> None:
        interval = max(1, settings().inbound_sweep_seconds)
        while True:
            await asyncio.sleep(interval)
            await self.replay()

    # -- HTTP --

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        self.on_new_message = on_new_message
        bp = Blueprint("leadbot_whatsapp", __name__)

        @bp.listener("after_server_start")
        async def start(app: Any, _loop: Any) -> None:
            self.app = app
            await self.replay()
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

        @bp.listener("before_server_stop")
        async def stop(_app: Any, _loop: Any) -> None:
            if self._sweeper is not None:
                self._sweeper.cancel()

        @bp.route("/health", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            try:
                await run_sync(_health)
            except Exception:
                logger.exception("health check: database unavailable")
                return response.json({"status": "error", "database": "unavailable"}, status=503)
            return response.json({"status": "ok", "database": "ok", "model_ready": self._agent_ready()})

        @bp.route("/metrics", methods=["GET"])
        async def prometheus(_: Request) -> HTTPResponse:
            from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

            return response.raw(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)

        @bp.route("/inbound", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self._timed("inbound", self._receive, request)

        @bp.route("/status", methods=["POST"])
        async def status(request: Request) -> HTTPResponse:
            return await self._timed("status", self._status, request)

        return bp

    async def _timed(self, endpoint: str, handler: Callable[[Request], Awaitable[HTTPResponse]], request: Request):
        started = time.perf_counter()
        try:
            result = await handler(request)
        except Exception:
            logger.exception("webhook %s failed", endpoint)
            result = response.text("", status=503)  # Twilio retries; nothing was acknowledged
        metrics.WEBHOOK_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        metrics.WEBHOOK_RESPONSES.labels(endpoint, str(result.status)).inc()
        return result

    @staticmethod
    def _form(request: Request) -> _Params:
        """The POST parameters exactly as Twilio signed them, blank values included (a media message's `Body=`).

        Sanic's `request.form` drops blank values, which would break the signature of every media message.
        """
        try:
            content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if content_type == "application/x-www-form-urlencoded":
                return _Params(parse_qs(request.body.decode("utf-8", errors="replace"), keep_blank_values=True))
            return _Params(request.form)
        except Exception:
            return _Params({})

    async def _receive(self, request: Request) -> HTTPResponse:
        params = self._form(request)
        if not signature_valid(request, params):
            metrics.SIGNATURE_FAILURES.labels("inbound").inc()
            return response.text("invalid signature", status=403)
        try:
            form = inbound.parse_form(params)
        except inbound.InvalidInbound as exc:
            logger.warning("signed inbound webhook rejected: %s", exc)
            return response.text(str(exc), status=400)
        result = await run_sync(_persist, form)
        if result.duplicate:
            metrics.DUPLICATE_INBOUND.inc()
            return _twiml()
        metrics.INBOUND_MESSAGES.labels(inbound.message_type_of(form)).inc()
        self._spawn(self._drain_later(result.conversation_id))
        return _twiml()

    async def _status(self, request: Request) -> HTTPResponse:
        params = self._form(request)
        if not signature_valid(request, params):
            metrics.SIGNATURE_FAILURES.labels("status").inc()
            return response.text("invalid signature", status=403)
        await run_sync(_apply_status, params)
        return _twiml()


def _apply_status(params: Any) -> inbound.StatusResult:
    from leadbot.db.models import Contact
    from leadbot.services import consent

    with _session_scope() as session:
        result = inbound.apply_status(session, params)
        if result.opted_out_contact_id is not None:
            contact = session.get(Contact, result.opted_out_contact_id)
            consent.revoke(session, contact, source="twilio_error_opted_out")
        if not result.found:
            logger.info("status callback for an unknown message id ignored")
        return result
