"""Prometheus metrics, defined once so that every process exports the same names (issue 8 point 2).

Each process serves them on its own `/metrics` (Rasa: our channel's blueprint; others: their HTTP port).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOK_LATENCY = Histogram(
    "leadbot_webhook_ack_seconds",
    "Time from webhook arrival to acknowledgement",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
WEBHOOK_RESPONSES = Counter("leadbot_webhook_responses_total", "Webhook responses by status code", ["endpoint", "code"])
SIGNATURE_FAILURES = Counter(
    "leadbot_webhook_signature_failures_total", "Webhooks rejected for a bad signature", ["endpoint"]
)
DUPLICATE_INBOUND = Counter("leadbot_inbound_duplicates_total", "Inbound webhooks ignored as redeliveries")
INBOUND_MESSAGES = Counter("leadbot_inbound_messages_total", "Inbound messages persisted", ["message_type"])
TURN_LATENCY = Histogram("leadbot_turn_seconds", "Time to run one dialogue turn")
OUTBOUND_QUEUE_DEPTH = Gauge("leadbot_outbound_queue_depth", "Outbound messages waiting to be handed to Twilio")
OUTBOUND_QUEUE_LAG = Gauge("leadbot_outbound_queue_lag_seconds", "Age of the oldest due outbound message")
SEND_ATTEMPTS = Counter("leadbot_send_attempts_total", "Attempts to hand a message to Twilio", ["outcome"])
SEND_FAILURES = Counter("leadbot_send_failures_total", "Failed send attempts by provider error code", ["error_code"])
DEAD_LETTERS = Counter("leadbot_dead_letters_total", "Items moved to the dead letters", ["kind"])
POLICY_BLOCKS = Counter("leadbot_policy_blocks_total", "Outbound messages blocked by the policy gate", ["reason"])
HANDOVERS = Counter("leadbot_handovers_total", "Conversations handed to a human", ["reason"])
HANDOVER_ESCALATIONS = Counter("leadbot_handover_escalations_total", "Handovers not answered within the SLA")
TASKS_FIRED = Counter("leadbot_tasks_fired_total", "Scheduled tasks fired", ["task_type", "outcome"])
TASK_LAG = Gauge("leadbot_task_lag_seconds", "Age of the oldest due pending task")
CRM_OUTBOX_DEPTH = Gauge("leadbot_crm_outbox_depth", "CRM writes waiting for delivery")
