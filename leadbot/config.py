"""Runtime configuration, read once from environment variables (documented in .env.example)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int) -> int:
    raw = _env(name)
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = _env(name)
    return float(raw) if raw else default


def _bool(name: str, default: bool) -> bool:
    raw = _env(name).lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


def _hhmm(raw: str) -> tuple[int, int]:
    hours, minutes = raw.split(":")
    return int(hours), int(minutes)


DEFAULT_DATABASE_URL = "sqlite:///var/leadbot.db"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = ""
    public_base_url: str = "http://localhost:5005"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_whatsapp_from: str = "whatsapp:+14155238886"
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_messaging_service_sid: str = ""
    twilio_timeout_seconds: float = 10.0
    ops_api_key: str = ""
    rasa_api_token: str = ""
    rasa_url: str = "http://localhost:5005"
    # Rasa's stores as the ops API reaches them (privacy export/delete): the SQL tracker database and the Redis
    # lock store (empty: Rasa keeps its lock in memory, nothing to check or clear from outside).
    rasa_tracker_url: str = ""
    rasa_lock_url: str = ""
    ops_api_port: int = 8000
    ops_api_host: str = "0.0.0.0"
    # SIGTERM: running requests get this long to finish before the ops API exits.
    ops_api_graceful_timeout_seconds: int = 20
    # Policy
    quiet_hours_start: tuple[int, int] = (23, 0)
    quiet_hours_end: tuple[int, int] = (7, 0)
    reply_delay_min_seconds: int = 0
    reply_delay_max_seconds: int = 0
    service_window_hours: int = 24
    # Inbound channel: wait this long before starting a conversation's turns so a burst arrives first (issue 10),
    # and how often each Rasa replica sweeps for inbound messages whose turn never ran (crash recovery).
    inbound_reorder_window_ms: int = 300
    inbound_sweep_seconds: int = 30
    inbound_parallel_conversations: int = 8  # conversations whose turns one Rasa process runs at the same time
    # Sender
    send_max_attempts: int = 5
    send_backoff_base_seconds: float = 2.0
    send_backoff_max_seconds: float = 300.0
    sender_port: int = 8002
    sender_threads: int = 8
    sender_poll_seconds: float = 0.5
    # Content API (quick-reply buttons); empty: content.twilio.com, or TWILIO_API_BASE_URL when that is overridden
    twilio_content_api_base_url: str = ""
    # Signs the sandbox outbox's status callbacks (and checks webhooks) when no real Twilio token is configured
    sandbox_auth_token: str = "leadbot-sandbox"
    # Scheduler
    welcome_delay_seconds: int = 300
    task_lease_seconds: int = 120
    # Every scheduler delay is configuration (issue 5 point 6); follow-ups count from qualification,
    # reminders back from the appointment's start.
    nudge_delay_seconds: int = 1800
    followup_24h_delay_seconds: int = 86400
    followup_48h_delay_seconds: int = 172800
    reminder_22h_before_seconds: int = 79200
    reminder_55m_before_seconds: int = 3300
    reminder_5m_before_seconds: int = 300
    task_max_attempts: int = 5
    task_backoff_base_seconds: float = 15.0
    task_backoff_max_seconds: float = 900.0
    scheduler_port: int = 8001
    scheduler_poll_seconds: float = 1.0
    scheduler_batch_size: int = 20
    # Triggers in flight at once per worker (different conversations only; Rasa serialises each conversation anyway)
    scheduler_fire_concurrency: int = 4
    rasa_timeout_seconds: float = 15.0
    # Handover SLA
    handover_sla_minutes: int = 15
    team_hours_start: tuple[int, int] = (9, 0)
    team_hours_end: tuple[int, int] = (18, 0)
    team_workdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    team_timezone: str = "Europe/Berlin"
    # CRM (issue 6): which adapter delivers the crm_outbox (none|hubspot|webhook) and the outbox worker's retries
    crm_adapter: str = "none"
    hubspot_api_base_url: str = "https://api.hubapi.com"
    hubspot_access_token: str = ""
    crm_webhook_url: str = ""
    crm_webhook_secret: str = ""
    crm_timeout_seconds: float = 10.0
    crm_max_attempts: int = 8
    crm_backoff_base_seconds: float = 30.0
    crm_backoff_max_seconds: float = 3600.0
    crm_outbox_batch_size: int = 50
    crm_outbox_poll_seconds: float = 5.0
    # Calendar (CalDAV) and booking: slots inside business hours in the team's zoneinfo zone
    caldav_url: str = ""
    caldav_username: str = ""
    caldav_password: str = ""
    caldav_calendar: str = ""
    booking_timezone: str = "Europe/Berlin"
    booking_hours_start: tuple[int, int] = (9, 0)
    booking_hours_end: tuple[int, int] = (18, 0)
    booking_workdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    booking_duration_minutes: int = 30
    booking_slot_step_minutes: int = 30
    booking_lead_time_minutes: int = 120
    booking_horizon_days: int = 14
    booking_meeting_link_template: str = "https://meet.jit.si/leadbot-{token}"
    calendar_sync_seconds: float = 300.0
    # Time travel for the simulator and tests (offset file shared by all processes)
    clock_offset_file: str = ""
    # The WhatsApp simulator (/simulator): None (SIMULATOR_ENABLED unset) means on exactly while no Twilio credentials
    # are configured, so a production deployment never exposes it by accident; 1 forces it on (staging), 0 off.
    simulator_enabled: bool | None = None

    @property
    def twilio_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def simulator_active(self) -> bool:
        return not self.twilio_enabled if self.simulator_enabled is None else self.simulator_enabled

    @property
    def webhook_auth_token(self) -> str:
        """The token Twilio signs webhooks with: the real one, else the sandbox outbox's."""
        return self.twilio_auth_token or self.sandbox_auth_token


def load_settings() -> Settings:
    workdays_raw = _env("TEAM_WORKDAYS", "0,1,2,3,4")
    return Settings(
        database_url=_env("DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=_env("REDIS_URL"),
        public_base_url=_env("PUBLIC_BASE_URL", "http://localhost:5005").rstrip("/"),
        twilio_account_sid=_env("TWILIO_ACCOUNT_SID"),
        twilio_auth_token=_env("TWILIO_AUTH_TOKEN"),
        twilio_whatsapp_from=_env("TWILIO_WHATSAPP_FROM", "whatsapp:+14155238886"),
        twilio_api_base_url=_env("TWILIO_API_BASE_URL", "https://api.twilio.com").rstrip("/"),
        twilio_messaging_service_sid=_env("TWILIO_MESSAGING_SERVICE_SID"),
        twilio_timeout_seconds=_float("TWILIO_TIMEOUT_SECONDS", 10.0),
        ops_api_key=_env("OPS_API_KEY"),
        rasa_api_token=_env("RASA_API_TOKEN"),
        rasa_url=_env("RASA_URL", "http://localhost:5005").rstrip("/"),
        rasa_tracker_url=_env("RASA_TRACKER_URL"),
        rasa_lock_url=_env("RASA_LOCK_URL"),
        ops_api_port=_int("OPS_API_PORT", 8000),
        ops_api_host=_env("OPS_API_HOST", "0.0.0.0"),
        ops_api_graceful_timeout_seconds=_int("OPS_API_GRACEFUL_TIMEOUT_SECONDS", 20),
        quiet_hours_start=_hhmm(_env("QUIET_HOURS_START", "23:00")),
        quiet_hours_end=_hhmm(_env("QUIET_HOURS_END", "07:00")),
        reply_delay_min_seconds=_int("REPLY_DELAY_MIN_SECONDS", 0),
        reply_delay_max_seconds=_int("REPLY_DELAY_MAX_SECONDS", 0),
        service_window_hours=_int("SERVICE_WINDOW_HOURS", 24),
        inbound_reorder_window_ms=_int("INBOUND_REORDER_WINDOW_MS", 300),
        inbound_sweep_seconds=_int("INBOUND_SWEEP_SECONDS", 30),
        inbound_parallel_conversations=_int("INBOUND_PARALLEL_CONVERSATIONS", 8),
        send_max_attempts=_int("SEND_MAX_ATTEMPTS", 5),
        send_backoff_base_seconds=_float("SEND_BACKOFF_BASE_SECONDS", 2.0),
        send_backoff_max_seconds=_float("SEND_BACKOFF_MAX_SECONDS", 300.0),
        sender_port=_int("SENDER_PORT", 8002),
        sender_threads=_int("SENDER_THREADS", 8),
        sender_poll_seconds=_float("SENDER_POLL_SECONDS", 0.5),
        twilio_content_api_base_url=_env("TWILIO_CONTENT_API_BASE_URL").rstrip("/"),
        sandbox_auth_token=_env("TWILIO_SANDBOX_AUTH_TOKEN", "leadbot-sandbox"),
        welcome_delay_seconds=_int("WELCOME_DELAY_SECONDS", 300),
        task_lease_seconds=_int("TASK_LEASE_SECONDS", 120),
        nudge_delay_seconds=_int("NUDGE_DELAY_SECONDS", 1800),
        followup_24h_delay_seconds=_int("FOLLOWUP_24H_DELAY_SECONDS", 86400),
        followup_48h_delay_seconds=_int("FOLLOWUP_48H_DELAY_SECONDS", 172800),
        reminder_22h_before_seconds=_int("REMINDER_22H_BEFORE_SECONDS", 79200),
        reminder_55m_before_seconds=_int("REMINDER_55M_BEFORE_SECONDS", 3300),
        reminder_5m_before_seconds=_int("REMINDER_5M_BEFORE_SECONDS", 300),
        task_max_attempts=_int("TASK_MAX_ATTEMPTS", 5),
        task_backoff_base_seconds=_float("TASK_BACKOFF_BASE_SECONDS", 15.0),
        task_backoff_max_seconds=_float("TASK_BACKOFF_MAX_SECONDS", 900.0),
        scheduler_port=_int("SCHEDULER_PORT", 8001),
        scheduler_poll_seconds=_float("SCHEDULER_POLL_SECONDS", 1.0),
        scheduler_batch_size=_int("SCHEDULER_BATCH_SIZE", 20),
        scheduler_fire_concurrency=max(1, _int("SCHEDULER_FIRE_CONCURRENCY", 4)),
        rasa_timeout_seconds=_float("RASA_TIMEOUT_SECONDS", 15.0),
        handover_sla_minutes=_int("HANDOVER_SLA_MINUTES", 15),
        team_hours_start=_hhmm(_env("TEAM_HOURS_START", "09:00")),
        team_hours_end=_hhmm(_env("TEAM_HOURS_END", "18:00")),
        team_workdays=tuple(int(d) for d in workdays_raw.split(",") if d.strip()),
        team_timezone=_env("TEAM_TIMEZONE", "Europe/Berlin"),
        crm_adapter=_env("CRM_ADAPTER", "none").lower() or "none",
        hubspot_api_base_url=_env("HUBSPOT_API_BASE_URL", "https://api.hubapi.com").rstrip("/"),
        hubspot_access_token=_env("HUBSPOT_ACCESS_TOKEN"),
        crm_webhook_url=_env("CRM_WEBHOOK_URL"),
        crm_webhook_secret=_env("CRM_WEBHOOK_SECRET"),
        crm_timeout_seconds=_float("CRM_TIMEOUT_SECONDS", 10.0),
        crm_max_attempts=_int("CRM_MAX_ATTEMPTS", 8),
        crm_backoff_base_seconds=_float("CRM_BACKOFF_BASE_SECONDS", 30.0),
        crm_backoff_max_seconds=_float("CRM_BACKOFF_MAX_SECONDS", 3600.0),
        crm_outbox_batch_size=_int("CRM_OUTBOX_BATCH_SIZE", 50),
        crm_outbox_poll_seconds=_float("CRM_OUTBOX_POLL_SECONDS", 5.0),
        caldav_url=_env("CALDAV_URL"),
        caldav_username=_env("CALDAV_USERNAME"),
        caldav_password=_env("CALDAV_PASSWORD"),
        caldav_calendar=_env("CALDAV_CALENDAR"),
        booking_timezone=_env("BOOKING_TIMEZONE", _env("TEAM_TIMEZONE", "Europe/Berlin")),
        booking_hours_start=_hhmm(_env("BOOKING_HOURS_START", "09:00")),
        booking_hours_end=_hhmm(_env("BOOKING_HOURS_END", "18:00")),
        booking_workdays=tuple(int(d) for d in _env("BOOKING_WORKDAYS", workdays_raw).split(",") if d.strip()),
        booking_duration_minutes=_int("BOOKING_DURATION_MINUTES", 30),
        booking_slot_step_minutes=_int("BOOKING_SLOT_STEP_MINUTES", 30),
        booking_lead_time_minutes=_int("BOOKING_LEAD_TIME_MINUTES", 120),
        booking_horizon_days=_int("BOOKING_HORIZON_DAYS", 14),
        booking_meeting_link_template=_env("BOOKING_MEETING_LINK_TEMPLATE", "https://meet.jit.si/leadbot-{token}"),
        calendar_sync_seconds=_float("CALENDAR_SYNC_SECONDS", 300.0),
        clock_offset_file=_env("LEADBOT_CLOCK_OFFSET_FILE"),
        simulator_enabled=_bool("SIMULATOR_ENABLED", False) if _env("SIMULATOR_ENABLED") else None,
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings; tests call `settings.cache_clear()` after changing the environment."""
    return load_settings()
