"""The one set of migrations builds exactly the model's schema on PostgreSQL and SQLite, and rolls back cleanly."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from leadbot.db import migrate
from leadbot.db.models import Base
from leadbot.db.session import create_db_engine
from tests.conftest import create_database, drop_database

SEED_TABLES = {
    "contacts": {"id", "whatsapp_e164", "first_name", "timezone", "language", "consent_status", "consent_source",
                 "consent_text_version", "consent_timestamp", "created_at", "updated_at"},
    "conversations": {"id", "contact_id", "status", "current_state", "last_inbound_at", "last_outbound_at",
                      "service_window_expires_at", "owner", "created_at", "updated_at"},
    "messages": {"id", "conversation_id", "direction", "channel", "provider_message_id", "message_type", "content",
                 "template_name", "delivery_status", "error_code", "created_at"},
    "qualification_answers": {"id", "conversation_id", "ads_running", "monthly_leads_bucket", "qualified", "reason",
                              "updated_at"},
    "tasks_scheduled": {"id", "conversation_id", "task_type", "run_at", "payload_json", "status", "attempts"},
    "audit_events": {"id", "contact_id", "event_type", "details_json", "created_at"},
}


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/migrations.db"
        return
    name = f"leadbot_migrations_{uuid.uuid4().hex[:8]}"
    yield create_database(name)
    drop_database(name)


def test_upgrade_builds_the_model_schema_and_downgrade_removes_it(fresh_url):
    migrate.upgrade(fresh_url)
    engine = create_db_engine(fresh_url)
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)
    for table, seed_columns in SEED_TABLES.items():
        columns = {column["name"] for column in inspector.get_columns(table)}
        assert seed_columns <= columns, f"{table} lacks {seed_columns - columns}"
    index_columns = {tuple(ix["column_names"]) for ix in inspector.get_indexes("tasks_scheduled")}
    assert ("status", "run_at") in index_columns  # due pending tasks are one index range scan
    engine.dispose()

    migrate.downgrade(fresh_url)
    engine = create_db_engine(fresh_url)
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_constraints_hold_on_both_databases(fresh_url):
    migrate.upgrade(fresh_url)
    engine = create_db_engine(fresh_url)
    insert_contact = sa.text(
        "INSERT INTO contacts (whatsapp_e164, timezone, language, consent_status, created_at, updated_at) "
        "VALUES (:e164, 'Europe/Berlin', 'de', :consent, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as connection:
        connection.execute(insert_contact, {"e164": "+4915112345678", "consent": "granted"})
    with pytest.raises(IntegrityError), engine.begin() as connection:  # unique whatsapp_e164
        connection.execute(insert_contact, {"e164": "+4915112345678", "consent": "granted"})
    with pytest.raises(IntegrityError), engine.begin() as connection:  # enum values are enforced
        connection.execute(insert_contact, {"e164": "+4915112345679", "consent": "maybe"})
    engine.dispose()
