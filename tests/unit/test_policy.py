"""The policy gate, rule by rule (pure functions: no database)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from leadbot.domain.policy import (
    BlockReason,
    ContactState,
    MessageKind,
    PolicyConfig,
    Purpose,
    SendRequest,
    evaluate,
    in_quiet_hours,
    next_allowed_time,
)

UTC = timezone.utc
CONFIG = PolicyConfig()
NOON_BERLIN = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)  # 12:00 in Berlin (CET)


def contact(**overrides) -> ContactState:
    values = dict(
        consent_status="granted",
        timezone="Europe/Berlin",
        service_window_expires_at=NOON_BERLIN + timedelta(hours=10),
        owner="bot",
    )
    values.update(overrides)
    return ContactState(**values)


def session_reply(**overrides) -> SendRequest:
    values = dict(kind=MessageKind.SESSION, purpose=Purpose.CONVERSATION)
    values.update(overrides)
    return SendRequest(**values)


def template(approved: bool = True, **overrides) -> SendRequest:
    values = dict(
        kind=MessageKind.TEMPLATE, purpose=Purpose.MARKETING, template_name="lead_nudge_v1", template_approved=approved
    )
    values.update(overrides)
    return SendRequest(**values)


def test_session_message_inside_window_is_sent_now():
    decision = evaluate(session_reply(), contact(), NOON_BERLIN, CONFIG)
    assert decision.allowed and decision.send_at == NOON_BERLIN and not decision.deferred_for_quiet_hours


def test_session_message_outside_window_is_blocked():
    decision = evaluate(session_reply(), contact(service_window_expires_at=NOON_BERLIN), NOON_BERLIN, CONFIG)
    assert not decision.allowed and decision.reason is BlockReason.OUTSIDE_SERVICE_WINDOW


def test_session_message_without_any_inbound_is_blocked():
    decision = evaluate(session_reply(), contact(service_window_expires_at=None), NOON_BERLIN, CONFIG)
    assert decision.reason is BlockReason.OUTSIDE_SERVICE_WINDOW


def test_window_is_checked_at_the_deferred_send_time():
    late_evening = datetime(2026, 11, 25, 22, 30, tzinfo=UTC)  # 23:30 Berlin: quiet hours
    closes_at_night = late_evening + timedelta(hours=2)
    decision = evaluate(session_reply(), contact(service_window_expires_at=closes_at_night), late_evening, CONFIG)
    assert decision.reason is BlockReason.OUTSIDE_SERVICE_WINDOW


def test_approved_template_outside_window_is_allowed():
    decision = evaluate(template(), contact(service_window_expires_at=None), NOON_BERLIN, CONFIG)
    assert decision.allowed


def test_unapproved_template_is_blocked():
    decision = evaluate(template(approved=False), contact(), NOON_BERLIN, CONFIG)
    assert decision.reason is BlockReason.TEMPLATE_NOT_APPROVED


@pytest.mark.parametrize(
    ("status", "reason"), [("revoked", BlockReason.CONSENT_REVOKED), ("unknown", BlockReason.NO_CONSENT)]
)
def test_marketing_needs_granted_consent(status, reason):
    decision = evaluate(template(), contact(consent_status=status), NOON_BERLIN, CONFIG)
    assert decision.reason is reason


def test_revoked_consent_still_allows_replies_in_a_conversation_the_lead_started():
    assert evaluate(session_reply(), contact(consent_status="revoked"), NOON_BERLIN, CONFIG).allowed


def test_opt_out_confirmation_is_always_sent_immediately():
    night = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    request = session_reply(purpose=Purpose.OPT_OUT_CONFIRMATION, sender_role="system")
    state = contact(consent_status="revoked", owner="human", service_window_expires_at=None)
    decision = evaluate(request, state, night, CONFIG)
    assert decision.allowed and decision.send_at == night


def test_bot_is_silent_while_a_human_owns_the_conversation():
    decision = evaluate(session_reply(), contact(owner="human"), NOON_BERLIN, CONFIG)
    assert decision.reason is BlockReason.HUMAN_OWNS_CONVERSATION


def test_human_agent_may_write_while_owning_the_conversation():
    assert evaluate(session_reply(sender_role="human"), contact(owner="human"), NOON_BERLIN, CONFIG).allowed


def test_night_reply_is_deferred_to_seven_local():
    night = datetime(2026, 11, 25, 22, 30, tzinfo=UTC)  # 23:30 Berlin
    state = contact(service_window_expires_at=night + timedelta(hours=20))
    decision = evaluate(session_reply(), state, night, CONFIG)
    assert decision.allowed and decision.deferred_for_quiet_hours
    assert decision.send_at == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)  # 07:00 Berlin


def test_early_morning_is_deferred_to_the_same_day():
    early = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)  # 05:00 Berlin
    assert next_allowed_time(early, "Europe/Berlin", CONFIG) == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def test_quiet_hours_follow_the_contacts_time_zone():
    moment = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)  # noon in Berlin, 00:00 in Auckland (NZDT, UTC+13)
    assert not in_quiet_hours(moment, "Europe/Berlin", CONFIG)
    assert in_quiet_hours(moment, "Pacific/Auckland", CONFIG)
    assert next_allowed_time(moment, "Pacific/Auckland", CONFIG) == datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def test_quiet_hours_boundaries():
    berlin = "Europe/Berlin"
    assert in_quiet_hours(datetime(2026, 11, 25, 22, 0, tzinfo=UTC), berlin, CONFIG)  # 23:00 exactly
    assert not in_quiet_hours(datetime(2026, 11, 25, 21, 59, tzinfo=UTC), berlin, CONFIG)  # 22:59
    assert not in_quiet_hours(datetime(2026, 11, 26, 6, 0, tzinfo=UTC), berlin, CONFIG)  # 07:00 exactly
    assert in_quiet_hours(datetime(2026, 11, 26, 5, 59, tzinfo=UTC), berlin, CONFIG)  # 06:59


def test_deferral_across_the_spring_dst_change():
    # 29 March 2026, Berlin jumps from 02:00 CET to 03:00 CEST; 07:00 CEST is 05:00 UTC.
    night = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert next_allowed_time(night, "Europe/Berlin", CONFIG) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


def test_custom_daytime_quiet_period():
    config = PolicyConfig(quiet_start=time(12, 0), quiet_end=time(13, 0))
    lunch = datetime(2026, 11, 25, 11, 30, tzinfo=UTC)  # 12:30 Berlin
    assert next_allowed_time(lunch, "Europe/Berlin", config) == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_requested_send_time_is_respected():
    later = NOON_BERLIN + timedelta(minutes=30)
    decision = evaluate(session_reply(not_before=later), contact(), NOON_BERLIN, CONFIG)
    assert decision.send_at == later


def test_reminder_deferred_past_its_appointment_is_dropped():
    night = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # 00:00 Berlin
    appointment = night + timedelta(hours=2)
    decision = evaluate(template(deadline=appointment), contact(), night, CONFIG)
    assert not decision.allowed and decision.reason is BlockReason.PAST_DEADLINE


def test_order_of_rules_human_owner_beats_everything_for_bot_messages():
    state = contact(owner="human", consent_status="revoked", service_window_expires_at=None)
    assert evaluate(template(), state, NOON_BERLIN, CONFIG).reason is BlockReason.HUMAN_OWNS_CONVERSATION
