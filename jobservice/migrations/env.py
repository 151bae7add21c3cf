"""Alembic environment for the service's own tables (run by `flask db upgrade` or at start-up)."""

from __future__ import annotations

from typing import Any

from alembic import context
from flask import current_app

from jobservice.database import VERSION_TABLE
from jobservice.extensions import db

OUR_TABLES = ("apscheduler_jobs",)
OUR_PREFIX = "jobservice_"


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Autogenerate only sees our tables, never the host application's."""
    if type_ != "table" or name is None:
        return True
    return name in OUR_TABLES or name.startswith(OUR_PREFIX)


def run_migrations_offline() -> None:
    context.configure(
        url=current_app.config["SQLALCHEMY_DATABASE_URI"],
        target_metadata=db.metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=db.metadata,
            version_table=VERSION_TABLE,
            include_name=include_name,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
