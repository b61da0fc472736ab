"""Embedded writers wait for SQLite's write lock in Python (cooperatively), not in its busy handler."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from hub.db import connection, db, write_transaction
from hub.models import Workspace


def _hold_write_lock(path: str, seconds: float, locked: threading.Event) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    other.execute("COMMIT")
    other.close()


def test_a_writer_waits_for_another_process_lock_then_commits(hub) -> None:
    path = db.obj.database
    locked = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, 0.3, locked))
    holder.start()
    locked.wait(5)
    started = time.monotonic()
    with connection(), write_transaction():
        Workspace.create(name="after-the-lock")
    waited = time.monotonic() - started
    holder.join()
    assert 0.25 <= waited < 1.5, waited  # waited for the holder, and got in soon after it let go
    with connection():
        assert Workspace.select().where(Workspace.name == "after-the-lock").count() == 1
        # the busy timeout is back for statements outside write transactions
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 15000


def test_nested_write_transactions_are_savepoints(hub) -> None:
    with connection():
        with write_transaction():
            Workspace.create(name="outer")
            with pytest.raises(RuntimeError), write_transaction():
                Workspace.create(name="inner")
                raise RuntimeError("roll the savepoint back")
        names = {w.name for w in Workspace.select()}
    assert "outer" in names and "inner" not in names


def test_a_lock_held_past_the_busy_timeout_is_an_error(hub, monkeypatch) -> None:
    from hub import db as hubdb

    monkeypatch.setitem(hubdb.SQLITE_PRAGMAS, "busy_timeout", 200)
    locked = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(db.obj.database, 1.0, locked))
    holder.start()
    locked.wait(5)
    try:
        with connection(), pytest.raises(Exception, match="locked"), write_transaction():
            Workspace.create(name="never")
    finally:
        holder.join()
