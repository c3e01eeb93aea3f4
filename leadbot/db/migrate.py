"""Apply or roll back the schema migrations programmatically (used by bootstrap, services and tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["skip_logging_config"] = True
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def main() -> None:
    parser = argparse.ArgumentParser(description="Migrate the leadbot database (DATABASE_URL).")
    parser.add_argument("direction", choices=["upgrade", "downgrade"])
    parser.add_argument("revision", nargs="?", default=None)
    args = parser.parse_args()
    if args.direction == "upgrade":
        upgrade(revision=args.revision or "head")
    else:
        downgrade(revision=args.revision or "base")


if __name__ == "__main__":
    main()
