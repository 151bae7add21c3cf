"""ORM classes over the service's tables, for the tests' own reads and writes.

The service itself is all SQLAlchemy Core and never imports the ORM (see jobservice.models).
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from jobservice.models import cluster_table, metadata, runs_table


class Base(DeclarativeBase):
    metadata = metadata


class JobRun(Base):
    __table__ = runs_table


class ClusterState(Base):
    __table__ = cluster_table
