"""Deliveries of one process committed together (hub.services.hooks.GroupCommit), on both databases."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from hub.db import connection
from hub.models import Delivery, FlowVersion, NodeRun, Run, RunEvent, Trigger
from hub.services.hooks import GroupCommit, _Pending, find_trigger
from tests.conftest import make_flow_version


def _trigger(fv: FlowVersion) -> Trigger:
    with connection():
        t = Trigger.create(workspace=fv.flow.workspace_id, flow=fv.flow_id, type="webhook", token=uuid.uuid4().hex)
        return find_trigger(t.token)


def _pending(trigger: Trigger, n: int) -> _Pending:
    row = dict(trigger=trigger.id, workspace=trigger.workspace_id, method="POST", headers={}, query={},
               body=b"{}", content_type="application/json")
    return _Pending(trigger, {"body": {"n": n}, "headers": {}, "query": {}, "method": "POST"}, row)


DOC = {"name": "g", "nodes": [{"id": "a", "connector": "log", "config": {"message": "x"}},
                              {"id": "b", "connector": "log", "config": {"message": "y"}}],
       "edges": [{"from": "a", "to": "b"}]}


def test_concurrent_deliveries_each_get_their_own_committed_run(any_hub) -> None:
    with connection():
        fv = make_flow_version(DOC)
    trigger = _trigger(fv)
    group = GroupCommit(max_batch=8)
    with ThreadPoolExecutor(16) as pool:
        accepted = list(pool.map(lambda n: group.submit(_pending(trigger, n)), range(120)))
    assert len({a.run_id for a in accepted}) == 120
    assert group.stats["deliveries"] == 120 and group.stats["batches"] <= 120
    with connection():
        runs = {r.id: r for r in Run.select().where(Run.id.in_([a.run_id for a in accepted]))}
        # each request got the run made from its own delivery
        assert [runs[a.run_id].trigger_data["body"]["n"] for a in accepted] == list(range(120))
        assert Delivery.select().where(Delivery.run.in_(list(runs))).count() == 120
        assert NodeRun.select().where(NodeRun.run.in_(list(runs))).count() == 240
        # each run's first events, numbered from 1 without gaps, and its event_seq matching them
        for run in runs.values():
            seqs = [e.seq for e in RunEvent.select().where(RunEvent.run == run.id).order_by(RunEvent.seq)]
            assert seqs == [1, 2] and run.event_seq == 2
    # every answer carries the bell of the run's first node
    assert all([(b.run_id, b.node_id) for b in a.bells] == [(a.run_id, "a")] for a in accepted)


def test_a_failing_delivery_fails_alone(any_hub) -> None:
    with connection():
        fv = make_flow_version(DOC)
    good = _trigger(fv)
    bad = _trigger(fv)
    bad.flow.run_version = FlowVersion(id=None)  # its version vanished: looked up again, and missing
    bad.flow_version = 99
    batch = [_pending(good, 1), _pending(bad, 2), _pending(good, 3)]
    group = GroupCommit()
    group._commit(batch)
    assert batch[0].accepted and batch[2].accepted and batch[1].accepted is None
    assert isinstance(batch[1].error, FlowVersion.DoesNotExist)
    assert all(p.done.is_set() for p in batch)
    with connection():
        assert Run.select().count() == 2 and Delivery.select().count() == 2


def test_a_lone_failure_is_raised_to_its_request(any_hub) -> None:
    with connection():
        fv = make_flow_version(DOC)
    bad = _trigger(fv)
    bad.flow.run_version = FlowVersion(id=None)
    bad.flow_version = 99
    with pytest.raises(FlowVersion.DoesNotExist):
        GroupCommit().submit(_pending(bad, 1))
    # the group is free again for the next delivery
    good = _trigger(fv)
    group = GroupCommit()
    with pytest.raises(FlowVersion.DoesNotExist):
        group.submit(_pending(bad, 1))
    assert group.submit(_pending(good, 2)).run_id


def test_a_locked_database_answers_503_and_stores_nothing(client, auth, monkeypatch) -> None:
    import sqlite3
    import threading
    import time

    from hub import db as hubdb
    from tests.triggers.helpers import hook_path, make_flow, make_trigger, run_count

    hook = hook_path(make_trigger(client, auth, make_flow(client, auth)["id"]))
    with connection():
        before = run_count()
    monkeypatch.setitem(hubdb.SQLITE_PRAGMAS, "busy_timeout", 200)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # another process's writer that does not let go
        other = sqlite3.connect(hubdb.db.obj.database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        other.execute("ROLLBACK")
        other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(5)
    try:
        r = client.post(hook, json={"n": 1})
    finally:
        release.set()
        holder.join()
    assert r.status_code == 503, r.get_json()
    assert r.get_json()["code"] == "database_unavailable" and r.headers["Retry-After"] == "1"
    time.sleep(0.05)
    with connection():
        assert run_count() == before
    assert client.post(hook, json={"n": 2}).status_code == 202  # and it recovers


def test_a_process_holds_a_bounded_number_of_postgres_connections(postgres_backend, monkeypatch) -> None:
    import threading

    from hub.app import create_app
    from hub.db import PG_POOL_SIZE, db
    from tests.conftest import _make_hub

    hubs = _make_hub(postgres_backend)
    hub = next(hubs)
    try:
        assert db.obj._max_connections == PG_POOL_SIZE
        client = create_app(hub=hub, test_config={"TESTING": True}).test_client()
        # every connection of this process busy elsewhere: a request waits, then gets a clean 503
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            with connection():
                db.execute_sql("SELECT 1")
                taken.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        taken.wait(5)
        db.close()  # this thread's own connection back too, and no idle one left to reuse
        db.obj.close_idle()
        monkeypatch.setattr(db.obj, "_max_connections", len(db.obj._in_use))  # the holder's: all taken
        monkeypatch.setattr(db.obj, "_wait_timeout", 0.3)
        try:
            r = client.get("/ready")
            hook = client.post("/hooks/no-such-token", json={})
        finally:
            release.set()
            holder.join()
        assert hook.status_code == 503, (r.status_code, hook.status_code)
        assert hook.get_json()["code"] == "database_unavailable" and hook.headers["Retry-After"] == "1"
        assert client.post("/hooks/no-such-token", json={}).status_code == 404  # and it recovers
    finally:
        next(hubs, None)
