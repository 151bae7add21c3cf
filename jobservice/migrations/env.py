"""Alembic environment for the service's own tables (`flask jobservice db upgrade`, or at start-up).

It runs on the connection the service hands it (database.alembic_config), never on the
app's own Flask-SQLAlchemy engine or Alembic environment, and records its revision in a
version table of its own.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from jobservice.database import VERSION_TABLE
from jobservice.models import metadata

OUR_TABLES = ("apscheduler_jobs",)
OUR_PREFIX = "jobservice_"


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Autogenerate only sees our tables, never the host application's."""
    if type_ != "table" or name is None:
        return True
    return name in OUR_TABLES or name.startswith(OUR_PREFIX)


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
