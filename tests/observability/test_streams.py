"""The tails behind the SSE routes, in process: late commits, auth, bad input."""

from __future__ import annotations

import json
import threading
import time

import psycopg2
import pytest

from hub.models import Workspace
from hub.services import flows as flow_service
from hub.services.live import Waker
from hub.services.runs import start_manual_run
from hub.services.streams import workspace_events
from tests.conftest import _make_hub

DOC = {"name": "one", "nodes": [{"id": "t", "connector": "transform", "config": {"value": 1}}]}


def _events(chunks: list[str]) -> list[dict]:
    out = []
    for chunk in chunks:
        for line in chunk.splitlines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


@pytest.fixture
def pg_hub(postgres_backend):
    yield from _make_hub(postgres_backend)


def test_workspace_tail_does_not_step_over_a_late_commit(postgres_backend, pg_hub):
    """id 1 is taken by a transaction that commits after id 2: the tail must still send 1, then 2.
    (PostgreSQL only: SQLite serialises writers, so its ids commit in order.)"""
    ws = Workspace.create(name="w").id
    flow = flow_service.create_flow(ws, DOC, pg_hub.registry)
    run, _ = start_manual_run(flow, {})
    url = postgres_backend.env["HOOKHUB_DATABASE_URL"]
    late, early = psycopg2.connect(url), psycopg2.connect(url)
    waker = Waker(None, poll_seconds=0.05)
    try:
        with late.cursor() as cur:  # takes the lower id, commits last
            cur.execute("SELECT max(id), max(seq) FROM run_event")
            after, seq = cur.fetchone()
            cur.execute("INSERT INTO run_event (run_id, seq, type, data, created_at) "
                        "VALUES (%s, %s, 'test.late', '{}', now() at time zone 'utc') RETURNING id",
                        (run.id, seq + 1))
            late_id = cur.fetchone()[0]
        with early.cursor() as cur:
            cur.execute("INSERT INTO run_event (run_id, seq, type, data, created_at) "
                        "VALUES (%s, %s, 'test.early', '{}', now() at time zone 'utc') RETURNING id",
                        (run.id, seq + 2))
            early_id = cur.fetchone()[0]
        early.commit()
        assert early_id > late_id

        chunks: list[str] = []
        stream = workspace_events(ws, after, waker, poll_seconds=0.1, settle_seconds=5.0)

        def consume():
            for chunk in stream:
                chunks.append(chunk)
                if len(_events(chunks)) >= 2:
                    return

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        time.sleep(1.0)
        assert _events(chunks) == [], "stepped over an id that had not committed yet"
        late.commit()
        reader.join(timeout=20)
        assert [e["id"] for e in _events(chunks)] == [late_id, early_id]
        assert [e["type"] for e in _events(chunks)] == ["test.late", "test.early"]
    finally:
        late.close()
        early.close()
        waker.stop()  # its poller would go on reading the databases of later tests


def test_workspace_tail_steps_over_a_gap_that_never_fills(hub):
    from hub.models import RunEvent

    ws = Workspace.create(name="w").id
    flow = flow_service.create_flow(ws, DOC, hub.registry)
    run, _ = start_manual_run(flow, {})
    first = RunEvent.select().where(RunEvent.run == run.id).order_by(RunEvent.id).first()
    RunEvent.create(run=run.id, seq=99, type="test.after_gap", data={})
    RunEvent.delete().where(RunEvent.id == first.id + 1).execute()  # a rolled-back or pruned id
    waker = Waker(None)
    stream = workspace_events(ws, first.id - 1, waker, poll_seconds=0.05, settle_seconds=0.3)
    chunks: list[str] = []
    t0 = time.monotonic()
    for chunk in stream:
        chunks.append(chunk)
        if len(_events(chunks)) >= 2:
            break
    waker.stop()
    ids = [e["id"] for e in _events(chunks)]
    assert ids == [first.id, first.id + 2] and _events(chunks)[1]["type"] == "test.after_gap"
    assert time.monotonic() - t0 >= 0.3  # it waited for the gap to settle first


def test_sse_routes_authenticate_and_refuse_bad_input(client, auth, hub):
    ws = Workspace.select().first().id
    flow = flow_service.create_flow(ws, DOC, hub.registry)
    run, _ = start_manual_run(flow, {})
    url = f"/api/v1/runs/{run.id}/events?follow=false"

    r = client.get(url)
    assert r.status_code == 401 and r.get_json()["code"] == "unauthorized"
    r = client.get(url + "&access_token=not-a-token")
    assert r.status_code == 401

    r = client.get(url, headers=auth.headers | {"Last-Event-ID": "abc"})
    assert r.status_code == 400 and r.get_json()["code"] == "bad_last_event_id"
    r = client.get(f"/api/v1/runs/{run.id + 999}/events", headers=auth.headers)
    assert r.status_code == 404 and r.get_json()["code"] == "run_not_found"
    r = client.get("/api/v1/events?last_event_id=-1", headers=auth.headers)
    assert r.status_code == 422

    # EventSource cannot send headers: the token may come as a query parameter on these routes
    r = client.get(url + "&access_token=" + auth.tokens["access_token"])
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    body = r.get_data(as_text=True)
    events = _events([body])
    assert [e["seq"] for e in events[:-1]] == list(range(1, len(events)))
    assert events[0]["type"] == "run.created"
    assert "event: end" in body

    # resuming: only what follows the given id
    r = client.get(url, headers=auth.headers | {"Last-Event-ID": "1"})
    assert [e.get("seq") for e in _events([r.get_data(as_text=True)])][0] == 2
    # the query parameter does not authenticate other routes
    r = client.get(f"/api/v1/runs/{run.id}?access_token=" + auth.tokens["access_token"])
    assert r.status_code == 401


def test_openapi_documents_the_stream_routes(client):
    spec = client.get("/openapi.json").get_json()
    assert "text/event-stream" in json.dumps(spec["paths"]["/api/v1/runs/{run_id}/events"])
    assert "/api/v1/events" in spec["paths"] and "/metrics" in spec["paths"] and "/ui" in spec["paths"]
