"""Alembic environment: one set of migrations for PostgreSQL and SQLite (batch mode for SQLite ALTERs)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from leadbot.config import settings
from leadbot.db.models import Base
from leadbot.db.session import create_db_engine

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name)


def _url() -> str:
    return config.attributes.get("database_url") or settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_db_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
