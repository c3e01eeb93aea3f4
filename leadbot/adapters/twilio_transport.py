"""Transports that hand one outbound WhatsApp message to Twilio, or to the local sandbox outbox.

Only the sender worker (`leadbot.sender`) uses them. A transport never raises for a provider failure: it returns a
`SendResult` with the provider's message SID or a classified `SendError` (see `twilio_errors`), and the sender
decides about retries, dead letters and consent. After an ambiguous failure (Twilio may have accepted the message
without us hearing back) the sender asks `find_accepted` before it sends again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from leadbot.adapters.twilio_errors import ErrorClass, SendError, classify_exception, classify_http
from leadbot.config import Settings, settings
from leadbot.phone import mask

log = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/webhooks/whatsapp/status"
DEFAULT_API_BASE_URL = "https://api.twilio.com"
DEFAULT_CONTENT_BASE_URL = "https://content.twilio.com"
# WhatsApp shows at most three quick-reply buttons in a session message, with titles of at most 20 characters.
MAX_QUICK_REPLIES = 3
MAX_BUTTON_TITLE = 20
# Looking up an ambiguous send: Twilio's `date_created` (whole seconds, Twilio's clock) may read a little earlier
# than our record of the attempt; read at most this many of the recipient's newest messages.
LOOKUP_CLOCK_TOLERANCE = timedelta(seconds=60)
LOOKUP_PAGE_SIZE = 50
LOOKUP_MAX_RECORDS = 200


@dataclass(frozen=True)
class OutboundMessage:
    message_id: int
    to: str  # E.164
    body: str = ""
    content_sid: str | None = None  # an approved template
    content_variables: dict[str, str] | None = None
    buttons: tuple[tuple[str, str], ...] = ()  # (title, payload) of a session message
    media_url: str | None = None


@dataclass(frozen=True)
class SendResult:
    sid: str | None = None
    error: SendError | None = None

    @property
    def ok(self) -> bool:
        return self.sid is not None


@dataclass(frozen=True)
class AcceptedMessage:
    """A message Twilio holds that looks like ours: same recipient, sender and body, created since the attempt."""

    sid: str
    status: str  # Twilio's word: queued, sent, delivered, read, failed, undelivered, ...
    error_code: str | None = None


@dataclass(frozen=True)
class LookupResult:
    matches: tuple[AcceptedMessage, ...] = ()  # oldest first
    error: SendError | None = None  # the lookup itself failed: the outcome is still unknown


class Transport(Protocol):
    name: str

    def send(self, message: OutboundMessage) -> SendResult: ...

    def find_accepted(self, message: OutboundMessage, since: datetime) -> LookupResult:
        """Messages the provider accepted that match `message` and were created at or after `since`."""

    def committed(self, message: OutboundMessage, result: SendResult) -> None:
        """Called once the sender has stored the accepted SID (the sandbox starts its status callbacks here)."""


def status_callback_url(cfg: Settings) -> str:
    return cfg.public_base_url.rstrip("/") + STATUS_CALLBACK_PATH


def whatsapp_address(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


def numbered_options(body: str, buttons: tuple[tuple[str, str], ...]) -> str:
    """Text fallback for more buttons than a quick reply can hold: the lead answers with the number or the title."""
    lines = [f"{index}. {title}" for index, (title, _payload) in enumerate(buttons, start=1)]
    return "\n".join([body, "", *lines]) if body else "\n".join(lines)


def quick_reply_request(body: str, buttons: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """A `twilio/quick-reply` Content API create request (with a `twilio/text` fallback for other channels)."""
    digest = content_hash(body, buttons)
    return {
        "friendly_name": f"leadbot_qr_{digest[:16]}",
        "language": "de",
        "types": {
            "twilio/quick-reply": {
                "body": body,
                "actions": [{"title": title[:MAX_BUTTON_TITLE], "id": payload} for title, payload in buttons],
            },
            "twilio/text": {"body": body},
        },
    }


def content_hash(body: str, buttons: tuple[tuple[str, str], ...]) -> str:
    return hashlib.sha256(json.dumps([body, buttons], ensure_ascii=False).encode("utf-8")).hexdigest()


class TwilioTransport:
    """Sends through the twilio SDK; `TWILIO_API_BASE_URL` redirects it to a local server in tests.

    One SDK client per thread: the SDK's HTTP client wraps one `requests.Session`, which is not thread-safe.
    Quick-reply contents are created once per distinct (body, buttons) and cached by hash for this process.
    """

    name = "twilio"

    def __init__(self, cfg: Settings | None = None) -> None:
        self.cfg = cfg or settings()
        if not self.cfg.twilio_enabled:
            raise ValueError("TwilioTransport needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self.api_base_url = self.cfg.twilio_api_base_url or DEFAULT_API_BASE_URL
        self.content_base_url = self.cfg.twilio_content_api_base_url or (
            DEFAULT_CONTENT_BASE_URL if self.api_base_url == DEFAULT_API_BASE_URL else self.api_base_url
        )
        self._local = threading.local()
        self._content_cache: dict[str, str] = {}
        self._content_lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            http_client = TwilioHttpClient(timeout=self.cfg.twilio_timeout_seconds)
            client = Client(self.cfg.twilio_account_sid, self.cfg.twilio_auth_token, http_client=http_client)
            # Domain.absolute_url reads base_url on every request, so this reroutes all calls of the domain.
            client.api.base_url = self.api_base_url
            client.content.base_url = self.content_base_url
            self._local.client = client
        return client

    def send(self, message: OutboundMessage) -> SendResult:
        from twilio.base.exceptions import TwilioRestException

        try:
            params = self._message_params(message)
        except TwilioRestException as exc:
            return SendResult(error=classify_http(exc.status, _int_or_none(exc.code), str(exc.msg)[:300]))
        except Exception as exc:  # noqa: BLE001 - every transport failure is classified, none escapes
            # Only the quick-reply content was being created: no message can have been accepted.
            return SendResult(error=classify_exception(exc, request_may_have_arrived=False))
        try:
            created = self._client().messages.create(**params)
            return SendResult(sid=created.sid)
        except TwilioRestException as exc:
            return SendResult(error=classify_http(exc.status, _int_or_none(exc.code), str(exc.msg)[:300]))
        except Exception as exc:  # noqa: BLE001
            return SendResult(error=classify_exception(exc))

    def find_accepted(self, message: OutboundMessage, since: datetime) -> LookupResult:
        """List the recipient's newest messages (`GET Messages.json?To=..&From=..`) and keep the ones like ours.

        No `DateSent` filter: it filters on `date_sent`, which stays empty while Twilio still queues a message,
        i.e. it would hide exactly the message an ambiguous send may have left behind. The list comes newest
        first, so reading stops at the first message sent before `since`.
        """
        from twilio.base.exceptions import TwilioException, TwilioRestException

        bound = since - LOOKUP_CLOCK_TOLERANCE
        body = self._expected_body(message)
        service = self.cfg.twilio_messaging_service_sid
        filters: dict[str, Any] = {"to": whatsapp_address(message.to)}
        if not service:
            # With a Messaging Service, `from` is only filled in once Twilio picked a sender: match the service.
            filters["from_"] = whatsapp_address(self.cfg.twilio_whatsapp_from)
        matches: list[AcceptedMessage] = []
        try:
            for seen, record in enumerate(self._client().messages.stream(page_size=LOOKUP_PAGE_SIZE, **filters)):
                if record.date_sent is not None and record.date_sent < bound:
                    break
                if seen >= LOOKUP_MAX_RECORDS:
                    # Not seen the end of the recent ones: "not found" could be wrong, and wrong means a double.
                    return LookupResult(error=_lookup_error("inconclusive", f"more than {seen} recent messages"))
                if (
                    record.direction == "outbound-api"
                    and (record.body or "") == body
                    and (not service or record.messaging_service_sid == service)
                    and record.date_created is not None
                    and record.date_created >= bound
                ):
                    code = str(record.error_code) if record.error_code else None
                    matches.append(AcceptedMessage(sid=str(record.sid), status=str(record.status), error_code=code))
        except TwilioRestException as exc:
            return LookupResult(error=_lookup_error(f"http_{exc.status}", str(exc.msg)[:300]))
        except TwilioException as exc:
            # A list page that is not a 200 comes as TwilioException("Unable to fetch page", response).
            status = getattr(exc.args[1] if len(exc.args) > 1 else None, "status_code", None)
            return LookupResult(error=_lookup_error(f"http_{status}" if status else "exception", str(exc)[:300]))
        except Exception as exc:  # noqa: BLE001 - like send: classified, never raised
            return LookupResult(error=_lookup_error(classify_exception(exc).code, str(exc)[:300]))
        return LookupResult(matches=tuple(reversed(matches)))

    def committed(self, message: OutboundMessage, result: SendResult) -> None:
        return None

    @staticmethod
    def _uses_quick_reply(message: OutboundMessage) -> bool:
        return bool(message.buttons) and len(message.buttons) <= MAX_QUICK_REPLIES and not message.media_url

    def _expected_body(self, message: OutboundMessage) -> str:
        """The `body` Twilio shows for the message we send: a content (template or quick reply) shows its
        rendered text, which is what the row stores; free text shows what we posted."""
        if message.content_sid or self._uses_quick_reply(message) or not message.buttons:
            return message.body
        return numbered_options(message.body, message.buttons)

    def _message_params(self, message: OutboundMessage) -> dict[str, Any]:
        params: dict[str, Any] = {
            "to": whatsapp_address(message.to),
            "status_callback": status_callback_url(self.cfg),
        }
        if self.cfg.twilio_messaging_service_sid:
            params["messaging_service_sid"] = self.cfg.twilio_messaging_service_sid
        else:
            params["from_"] = whatsapp_address(self.cfg.twilio_whatsapp_from)
        if message.content_sid:
            params["content_sid"] = message.content_sid
            if message.content_variables:
                params["content_variables"] = json.dumps(message.content_variables, ensure_ascii=False)
        elif self._uses_quick_reply(message):
            params["content_sid"] = self._quick_reply_sid(message.body, message.buttons)
        else:
            body = numbered_options(message.body, message.buttons) if message.buttons else message.body
            if body:
                params["body"] = body
            if message.media_url:
                params["media_url"] = [message.media_url]
        return params

    def _quick_reply_sid(self, body: str, buttons: tuple[tuple[str, str], ...]) -> str:
        from twilio.base.exceptions import TwilioRestException

        key = content_hash(body, buttons)
        with self._content_lock:
            cached = self._content_cache.get(key)
        if cached:
            return cached
        client = self._client()
        response = client.request(
            "POST",
            f"{self.content_base_url}/v1/Content",
            data=quick_reply_request(body, buttons),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            payload = json.loads(response.text or "{}")
        except ValueError:
            payload = {}
        if response.status_code >= 400 or not payload.get("sid"):
            raise TwilioRestException(
                response.status_code,
                f"{self.content_base_url}/v1/Content",
                msg=payload.get("message") or "content create failed",
                code=payload.get("code"),
                method="POST",
            )
        with self._content_lock:
            self._content_cache[key] = payload["sid"]
        return payload["sid"]


def _lookup_error(code: str, message: str) -> SendError:
    # Whatever made the lookup fail (even a 4xx), the message's fate is still unknown: try again later, bounded
    # by the retry budget, and never send blind meanwhile.
    return SendError(ErrorClass.RETRYABLE, f"lookup:{code}", message)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass
class SandboxRecord:
    sid: str
    message: OutboundMessage
    callbacks: list[tuple[str, int | None]] = field(default_factory=list)  # (status, HTTP code or None)


class SandboxTransport:
    """The embedded default without Twilio credentials: accepts locally and plays Twilio's status callbacks.

    After the sender stored the SID it posts `sent`, then `delivered` to the channel's status webhook, signed like
    Twilio does (`X-Twilio-Signature` over `PUBLIC_BASE_URL` + path and the form fields, with the sandbox token),
    so the whole delivery-tracking path runs locally. Callbacks run on one background thread, in order; a failing
    callback is logged and never affects sending.
    """

    name = "sandbox"

    def __init__(self, cfg: Settings | None = None, *, history: int = 1000, statuses: tuple[str, ...] = ()) -> None:
        self.cfg = cfg or settings()
        self.account_sid = self.cfg.twilio_account_sid or "AC" + "0" * 32
        self.statuses = statuses or ("sent", "delivered")
        self.outbox: deque[SandboxRecord] = deque(maxlen=history)
        self._callbacks: queue.Queue[SandboxRecord] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None

    def send(self, message: OutboundMessage) -> SendResult:
        record = SandboxRecord(sid="SM" + secrets.token_hex(16), message=message)
        self.outbox.append(record)
        log.info("sandbox outbox accepted message %s to %s", message.message_id, mask(message.to))
        return SendResult(sid=record.sid)

    def find_accepted(self, message: OutboundMessage, since: datetime) -> LookupResult:
        # The outbox accepts synchronously and never fails: no send of the sandbox is ever ambiguous.
        return LookupResult()

    def committed(self, message: OutboundMessage, result: SendResult) -> None:
        record = next((r for r in reversed(self.outbox) if r.sid == result.sid), None)
        if record is None:
            return
        with self._idle:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run_callbacks, name="sandbox-callbacks", daemon=True)
                self._thread.start()
        self._callbacks.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every scheduled callback was posted (tests, shutdown); False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _run_callbacks(self) -> None:
        import httpx

        with httpx.Client(timeout=5.0) as http:
            while True:
                record = self._callbacks.get()
                for status in self.statuses:
                    record.callbacks.append((status, self._post_status(http, record, status)))
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def status_params(self, record: SandboxRecord, status: str) -> dict[str, str]:
        to = whatsapp_address(record.message.to)
        sender = self.cfg.twilio_messaging_service_sid or whatsapp_address(self.cfg.twilio_whatsapp_from)
        params = {
            "MessageSid": record.sid,
            "SmsSid": record.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "From": sender,
            "To": to,
            "ApiVersion": "2010-04-01",
            "ChannelPrefix": "whatsapp",
        }
        if self.cfg.twilio_messaging_service_sid:
            params["MessagingServiceSid"] = self.cfg.twilio_messaging_service_sid
        return params

    def _post_status(self, http: Any, record: SandboxRecord, status: str) -> int | None:
        from twilio.request_validator import RequestValidator

        url = status_callback_url(self.cfg)
        params = self.status_params(record, status)
        signature = RequestValidator(self.cfg.webhook_auth_token).compute_signature(url, params)
        try:
            response = http.post(url, data=params, headers={"X-Twilio-Signature": signature})
        except Exception as exc:  # noqa: BLE001 - the sandbox's callbacks are best effort by design
            log.warning("sandbox status callback %s for %s failed: %s", status, record.sid, type(exc).__name__)
            return None
        if response.status_code >= 400:
            log.warning("sandbox status callback %s for %s answered %s", status, record.sid, response.status_code)
        return response.status_code


def build_transport(cfg: Settings | None = None) -> TwilioTransport | SandboxTransport:
    """Twilio when credentials are configured, else the local sandbox outbox (the embedded default)."""
    cfg = cfg or settings()
    return TwilioTransport(cfg) if cfg.twilio_enabled else SandboxTransport(cfg)
