"""Database access: engine and sessions, declarative base, Alembic migrations."""

from clinicbridge.db.base import Base, UTCDateTime
from clinicbridge.db.engine import Database, create_database

__all__ = ["Base", "Database", "UTCDateTime", "create_database"]
