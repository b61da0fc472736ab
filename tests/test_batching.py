"""hub.db deferred writes: on PostgreSQL they ride with the transaction's next statement, on SQLite
they run at once; either way what is read and committed is the same."""

from __future__ import annotations

import logging
import threading

import peewee
import psycopg2
import pytest

from hub.db import BatchingPostgresDatabase, Prepared, connection, db, defer, insert_rows, param, write_transaction
from hub.engine import idempotency_key
from hub.models import Flow, FlowVersion, RunEvent, Workspace, utcnow
from hub.runtime import claim_attempt, finish_attempt
from sandbox import Result
from tests.conftest import _make_hub, make_flow_version, start_run, wait_until

_RENAME = Prepared(lambda: Flow.update(name=param("name")).where(Flow.id == param("id")))
TEXTS = ["100%", "%s", "%(x)s", "%%", "';--", "a\\b", "é ✓", "\x01"]


@pytest.fixture
def flow(any_hub):
    with write_transaction():
        return Flow.create(workspace=Workspace.create(name="w"), name="f")


def test_deferred_writes_are_seen_later_in_the_transaction_and_committed(flow) -> None:
    with write_transaction():
        for i, text in enumerate(TEXTS):
            _RENAME.execute_later(name=f"{i}:{text}", id=flow.id)
            defer(FlowVersion.insert(flow=flow.id, version=i + 1, document={"t": text}).as_rowcount())
            # the next statement carries the writes before it: it sees them
            assert Flow.get_by_id(flow.id).name == f"{i}:{text}"
        _RENAME.execute_later(name="last", id=flow.id)  # carried by the COMMIT
    assert Flow.get_by_id(flow.id).name == "last"
    versions = FlowVersion.select().where(FlowVersion.flow == flow.id).order_by(FlowVersion.version)
    docs = [v.document["t"] for v in versions]
    assert docs == TEXTS


def test_an_error_in_a_deferred_write_rolls_the_whole_transaction_back(flow) -> None:
    with pytest.raises(peewee.IntegrityError), write_transaction():
        _RENAME.execute_later(name="changed", id=flow.id)
        defer(FlowVersion.insert(flow=flow.id, version=1, document={}).as_rowcount())
        defer(FlowVersion.insert(flow=flow.id, version=1, document={}).as_rowcount())  # unique (flow, version)
        Flow.get_by_id(flow.id)  # carries the writes: the duplicate fails here (PostgreSQL) or above (SQLite)
    assert Flow.get_by_id(flow.id).name == "f"
    assert FlowVersion.select().where(FlowVersion.flow == flow.id).count() == 0
    with write_transaction():  # the connection is usable again
        _RENAME.execute_later(name="again", id=flow.id)
    assert Flow.get_by_id(flow.id).name == "again"


def test_empty_and_abandoned_transactions(flow) -> None:
    with write_transaction():
        pass
    with pytest.raises(RuntimeError), write_transaction():
        _RENAME.execute_later(name="never", id=flow.id)
        raise RuntimeError("abandon")
    assert Flow.get_by_id(flow.id).name == "f"
    if isinstance(db.obj, BatchingPostgresDatabase):
        assert db.obj._pending() == []


def test_a_node_takes_eight_round_trips_on_postgresql(any_hub, caplog) -> None:
    """Claim and finish of a node with a successor: 4 + 4 round trips (16 one statement at a time)."""
    fv = make_flow_version({"name": "two", "nodes": [{"id": "a", "connector": "transform", "config": {"value": 1}},
                                                      {"id": "b", "connector": "transform", "config": {"value": 2}}],
                            "edges": [{"from": "a", "to": "b"}]})
    run = start_run(fv)
    caplog.set_level(logging.DEBUG, logger="peewee")

    def trips() -> int:
        # peewee logs each statement it sends on "peewee"; the hub's own threads and the pool
        # ("peewee.pool") log beside it, so count this thread's statements only
        me = threading.get_ident()
        return sum(1 for r in caplog.records if r.name == "peewee" and r.thread == me)

    with connection():
        caplog.clear()
        claim = claim_attempt(run.id, "a", any_hub.runtime)
        claim_trips = trips()
        caplog.clear()
        bells = finish_attempt(claim, Result(ok=True, output={"pct": "100%"}), any_hub.runtime)
        finish_trips = trips()
    assert claim.attempt.key == idempotency_key(run.id, "a", 1)
    assert [b.node_id for b in bells] == ["b"]
    types = [e.type for e in RunEvent.select().where(RunEvent.run == run.id).order_by(RunEvent.seq)]
    assert types == ["run.created", "node.ready", "node.started", "node.succeeded", "node.ready"]
    seqs = [e.seq for e in RunEvent.select().where(RunEvent.run == run.id).order_by(RunEvent.seq)]
    assert seqs == list(range(1, 6))
    if isinstance(db.obj, BatchingPostgresDatabase):
        assert (claim_trips, finish_trips) == (4, 4)


def _in_thread(fn):
    """Run ``fn`` on a fresh thread: its own connection state, outside the fixture's connection."""
    out: list = []
    errors: list = []

    def target():
        try:
            out.append(fn())
        except Exception as exc:  # re-raised on the test's thread
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]
    return out[0]


def _backend_pid() -> int:
    with connection():
        return db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


@pytest.fixture
def pg_hub(postgres_backend):
    yield from _make_hub(postgres_backend)


def test_the_pool_checks_a_connection_only_after_it_idled(pg_hub) -> None:
    pool = db.obj
    assert isinstance(pool, BatchingPostgresDatabase)
    pool.close_idle()  # earlier tests' connections: the next checkouts must all get the same one
    first = _in_thread(_backend_pid)
    _in_thread(_checkout)  # the same connection, handed out again at once...
    assert _activity(pg_hub, first) == ("SELECT pg_backend_pid()",)  # ...without peewee's `SELECT 1`
    assert _in_thread(_backend_pid) == first

    # Past the window the pool checks again: a connection killed while idle is replaced, unseen.
    pool.trust_checked_in_seconds = 0.0
    try:
        with psycopg2.connect(pg_hub.settings.database_url) as admin, admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (first,))
        wait_until("the backend is gone", lambda: _activity(pg_hub, first) is None, timeout=5)
        assert _in_thread(_backend_pid) != first
    finally:
        del pool.trust_checked_in_seconds


def _checkout() -> bool:
    with connection():
        return True


def _activity(hub, pid: int) -> tuple | None:
    """The backend's (last query,) in pg_stat_activity, or None once it is gone."""
    with psycopg2.connect(hub.settings.database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()


@pytest.mark.parametrize("count", [1, 3, 70])  # 70: past the compiled sizes, built each time
def test_insert_rows_compiled_per_shape(flow, count) -> None:
    rows = [{"flow": flow.id, "version": i + 1, "document": {"t": TEXTS[i % len(TEXTS)]}} for i in range(count)]
    with write_transaction():
        returned = insert_rows(FlowVersion, rows, FlowVersion.id)
        insert_rows(FlowVersion, [{"flow": flow.id, "version": 1000 + i, "document": {"i": i}} for i in range(count)])
        # rows of different shapes in one call go uncompiled
        insert_rows(FlowVersion, [{"flow": flow.id, "version": 5000, "document": {}},
                                  {"flow": flow.id, "version": 5001, "document": {}, "created_at": utcnow()}])
    assert len(returned) == count and all(r.id for r in returned)
    stored = {v.version: v.document for v in FlowVersion.select().where(FlowVersion.flow == flow.id)}
    assert [stored[i + 1]["t"] for i in range(count)] == [TEXTS[i % len(TEXTS)] for i in range(count)]
    assert [stored[1000 + i]["i"] for i in range(count)] == list(range(count))
    assert {5000, 5001} <= set(stored)
    with write_transaction():  # the same shape again: the compiled statement, fresh values
        again = [{"flow": flow.id, "version": 9000 + i, "document": {"again": i}} for i in range(count)]
        insert_rows(FlowVersion, again)
    assert FlowVersion.get((FlowVersion.flow == flow.id) & (FlowVersion.version == 9000)).document == {"again": 0}
