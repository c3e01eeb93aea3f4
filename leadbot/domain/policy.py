"""The policy gate: the one place that decides whether, and when, an outbound WhatsApp message may go out.

Pure functions, no I/O: the outbound service (`leadbot.services.outbound`) gathers the facts, asks `evaluate`,
and records the decision. Every path that sends (bot replies, scheduler tasks, the ops API, humans) goes through
that service, so every rule below holds for every message.

Rules (seed §2 "Policy-first", §7, issue 3 point 10):
1. A bot may not speak while a human owns the conversation.
2. Marketing (welcome, nudges, follow-ups, any template sent unprompted) needs granted consent; revoked consent
   blocks it. The single opt-out confirmation is always allowed.
3. Inside the 24 h service window a session (free-text) message is allowed; outside it only an approved template.
   The window is checked at the time the message will actually go out, not when it was requested.
4. Quiet hours (default 23:00-07:00 in the contact's time zone) never drop a message: `send_at` moves to the end of
   the quiet period. If that would pass the message's deadline (a reminder after its appointment), it is blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo


class MessageKind(str, Enum):
    SESSION = "session"
    TEMPLATE = "template"


class Purpose(str, Enum):
    CONVERSATION = "conversation"  # replies within a dialogue the lead is having
    MARKETING = "marketing"  # unprompted: welcome, nudges, follow-ups, reminders
    OPT_OUT_CONFIRMATION = "opt_out_confirmation"


class BlockReason(str, Enum):
    HUMAN_OWNS_CONVERSATION = "human_owns_conversation"
    CONSENT_REVOKED = "consent_revoked"
    NO_CONSENT = "no_consent"
    OUTSIDE_SERVICE_WINDOW = "outside_service_window"
    TEMPLATE_NOT_APPROVED = "template_not_approved"
    PAST_DEADLINE = "deferred_past_deadline"


@dataclass(frozen=True)
class PolicyConfig:
    quiet_start: time = time(23, 0)
    quiet_end: time = time(7, 0)


@dataclass(frozen=True)
class ContactState:
    consent_status: str  # granted | revoked | unknown
    timezone: str
    service_window_expires_at: datetime | None
    owner: str  # bot | human


@dataclass(frozen=True)
class SendRequest:
    kind: MessageKind
    purpose: Purpose
    sender_role: str = "bot"  # bot | human | system
    template_name: str | None = None
    template_approved: bool = False
    not_before: datetime | None = None  # requested send time, reply delay, or the queue position
    deadline: datetime | None = None  # a message that can't go out by then is pointless (reminders)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    send_at: datetime | None
    reason: BlockReason | None = None
    deferred_for_quiet_hours: bool = False

    @classmethod
    def block(cls, reason: BlockReason, send_at: datetime | None = None) -> Decision:
        return cls(allowed=False, send_at=send_at, reason=reason)


def in_quiet_hours(moment: datetime, tz_name: str, config: PolicyConfig) -> bool:
    local = moment.astimezone(ZoneInfo(tz_name)).time()
    if config.quiet_start > config.quiet_end:  # the usual case: the period spans midnight
        return local >= config.quiet_start or local < config.quiet_end
    return config.quiet_start <= local < config.quiet_end


def next_allowed_time(moment: datetime, tz_name: str, config: PolicyConfig) -> datetime:
    """The earliest time at or after `moment` outside quiet hours (DST-safe: computed on the local wall clock)."""
    if not in_quiet_hours(moment, tz_name, config):
        return moment
    zone = ZoneInfo(tz_name)
    local = moment.astimezone(zone)
    end_day = local.date()
    if config.quiet_start > config.quiet_end and local.time() >= config.quiet_start:
        end_day += timedelta(days=1)
    candidate = datetime.combine(end_day, config.quiet_end, tzinfo=zone)
    # A wall-clock time skipped by a DST jump normalises forward via UTC.
    return candidate.astimezone(moment.tzinfo)


def evaluate(request: SendRequest, contact: ContactState, now: datetime, config: PolicyConfig) -> Decision:
    """Decide whether `request` may be sent to `contact`, and when. `now` is an aware datetime."""
    if request.purpose is Purpose.OPT_OUT_CONFIRMATION:
        # Always allowed, immediately: it answers the lead's own message, so the window is open.
        return Decision(allowed=True, send_at=max(now, request.not_before or now))

    if request.sender_role == "bot" and contact.owner == "human":
        return Decision.block(BlockReason.HUMAN_OWNS_CONVERSATION)

    if request.purpose is Purpose.MARKETING and contact.consent_status != "granted":
        reason = BlockReason.CONSENT_REVOKED if contact.consent_status == "revoked" else BlockReason.NO_CONSENT
        return Decision.block(reason)

    if request.kind is MessageKind.TEMPLATE and not request.template_approved:
        return Decision.block(BlockReason.TEMPLATE_NOT_APPROVED)

    earliest = max(now, request.not_before or now)
    send_at = next_allowed_time(earliest, contact.timezone, config)
    deferred = send_at != earliest

    if request.deadline is not None and send_at > request.deadline:
        return Decision.block(BlockReason.PAST_DEADLINE, send_at=send_at)

    if request.kind is MessageKind.SESSION:
        window = contact.service_window_expires_at
        if window is None or send_at >= window:
            return Decision.block(BlockReason.OUTSIDE_SERVICE_WINDOW, send_at=send_at)

    return Decision(allowed=True, send_at=send_at, deferred_for_quiet_hours=deferred)
