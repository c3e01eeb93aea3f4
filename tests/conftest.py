"""Shared fixtures: a fresh PostgreSQL database per test run (migrated), cleaned between tests, and a clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot import clock as clock_module
from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db import migrate
from leadbot.db.models import Base
from leadbot.db.session import engine_for

# The server that tests create their databases on (trust auth on this machine and in CI).
ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_url(database: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def create_database(name: str) -> str:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return _server_url(name)


def drop_database(name: str) -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
    with admin.connect() as connection:
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
        )
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated, empty PostgreSQL database for this test run; DATABASE_URL points at it."""
    name = f"leadbot_test_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    migrate.upgrade(url)
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    settings.cache_clear()
    yield url
    engine_for.cache_clear()
    if previous is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = previous
    settings.cache_clear()
    drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The test database, emptied after each test."""
    engine = engine_for(database_url)
    yield engine
    truncate_all(engine)


def truncate_all(engine: Engine) -> None:
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, future=True, expire_on_commit=False) as db_session:
        yield db_session


@pytest.fixture
def frozen_clock() -> Iterator[FrozenClock]:
    """Process clock frozen at a Wednesday 10:00 Berlin time (09:00 UTC), restored afterwards."""
    clock = FrozenClock(datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc))
    clock_module.set_clock(clock)
    yield clock
    clock_module.set_clock(None)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/leadbot.db"
