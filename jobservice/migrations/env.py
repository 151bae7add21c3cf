"""Alembic environment for the service's own tables (`flask jobservice db upgrade`, or at start-up).

It runs on the connection the service hands it (database.alembic_config), never on the
app's own Flask-SQLAlchemy engine or Alembic environment, and records its revision in a
version table of its own.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from jobservice.database import VERSION_TABLE
from jobservice.models import ignore_jobservice_tables, metadata


def include_name(name: str | None, type_: str, parent: Any) -> bool:
    """Autogenerate only sees our tables, never the host application's."""
    return type_ != "table" or name is None or not ignore_jobservice_tables(name, type_, parent)


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
