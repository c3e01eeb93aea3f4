"""How the sender reacts to a failed hand-over to Twilio: classification of errors and the retry backoff.

Twilio error codes (https://www.twilio.com/docs/api/errors):
- 20429 "Too Many Requests", 63018 "rate limit exceeded for channel": retry later, like HTTP 429 and 5xx.
- 63016 "outside the allowed window": a free-form message after the 24 h service window closed. Our own policy
  gate should have stopped it, so this is a bookkeeping error, not something to retry as free text.
- 21610 "recipient unsubscribed" (STOP), 63032 "user opted out of marketing messages": revoke consent.
- Any other 4xx: the request itself is wrong; retrying cannot help, so it goes to the dead letters at once.

A failure without an answer after the request was written (a read timeout, a connection reset) is *ambiguous*:
Twilio may have accepted the message. The sender then looks the message up before it sends again (Twilio's
Messages API has no idempotency key), see `leadbot.sender.worker`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

RATE_LIMIT_CODES = frozenset({20429, 63018})
OUTSIDE_WINDOW_CODES = frozenset({63016})
OPTED_OUT_CODES = frozenset({21610, 63032})


class ErrorClass(str, Enum):
    RETRYABLE = "retryable"
    OUTSIDE_WINDOW = "outside_window"
    OPTED_OUT = "opted_out"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendError:
    kind: ErrorClass
    code: str  # Twilio's error code, else "http_<status>", "timeout", "connection" or "exception:<type>"
    message: str
    http_status: int | None = None
    ambiguous: bool = False  # no answer, but the request may have reached Twilio: it may have been accepted

    @property
    def retryable(self) -> bool:
        return self.kind is ErrorClass.RETRYABLE


def classify_http(status: int, code: int | None, message: str) -> SendError:
    """Classify an error answer of the Twilio REST API (status and the `code` of its JSON error body)."""
    label = str(code) if code else f"http_{status}"
    if code in OUTSIDE_WINDOW_CODES:
        return SendError(ErrorClass.OUTSIDE_WINDOW, label, message, status)
    if code in OPTED_OUT_CODES:
        return SendError(ErrorClass.OPTED_OUT, label, message, status)
    if code in RATE_LIMIT_CODES or status == 429 or status >= 500:
        return SendError(ErrorClass.RETRYABLE, label, message, status)
    return SendError(ErrorClass.PERMANENT, label, message, status)


def classify_exception(exc: BaseException, *, request_may_have_arrived: bool = True) -> SendError:
    """Classify a transport-level failure (no HTTP answer). All of them are worth another try.

    `request_may_have_arrived=False` when the failing call was not the message create itself (e.g. building the
    quick-reply content first): then nothing can have been accepted, whatever the exception says.
    """
    import requests

    ambiguous = request_may_have_arrived and outcome_unknown(exc)
    if isinstance(exc, requests.Timeout):
        return SendError(ErrorClass.RETRYABLE, "timeout", str(exc)[:300], ambiguous=ambiguous)
    if isinstance(exc, requests.ConnectionError):
        return SendError(ErrorClass.RETRYABLE, "connection", str(exc)[:300], ambiguous=ambiguous)
    # Unknown failures (a garbled answer, a proxy page) are retried: the retry budget bounds them.
    return SendError(ErrorClass.RETRYABLE, f"exception:{type(exc).__name__}", str(exc)[:300], ambiguous=ambiguous)


def outcome_unknown(exc: BaseException) -> bool:
    """Could Twilio have processed the request that failed with `exc`? Only "no" when it provably never left.

    A connect timeout or a refused / unresolvable connection never delivered a byte; a read timeout, a reset or
    aborted connection, or an unreadable answer may come after Twilio accepted the message.
    """
    import requests
    from urllib3.exceptions import ConnectTimeoutError

    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.Timeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        cause = exc.args[0] if exc.args else None
        cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the failure in `reason`
        # NewConnectionError (refused, unresolvable) is a ConnectTimeoutError too: nothing was sent.
        return not isinstance(cause, ConnectTimeoutError)
    return True


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`: exponential with "equal jitter" (half fixed, half random).

    The fixed half keeps a floor under the delay; the random half spreads replicas that failed together.
    """
    if base <= 0:
        return 0.0
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
