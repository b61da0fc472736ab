"""Bring the schema up to date with peewee's migration runner (``playhouse.migrations``).

Several processes may start at once (many API servers, workers): the run is serialised with a
PostgreSQL advisory lock or, on SQLite, a file lock beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from playhouse.migrations import Runner

import migrations as _migrations_pkg
from hub.db import connection, db, is_postgres

MIGRATIONS_DIR = Path(_migrations_pkg.__file__).parent
_LOCK_ID = 0x686F6F6B  # "hook"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    if is_postgres():
        db.execute_sql("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    else:
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def migrate(lock_path: Path) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    with connection(), _exclusive(lock_path):
        return Runner(db.obj, directory=str(MIGRATIONS_DIR)).up()


def pending() -> list[str]:
    with connection():
        return [m.name for m in Runner(db.obj, directory=str(MIGRATIONS_DIR)).status() if not m.applied]
