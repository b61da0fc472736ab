"""Live run events over SSE, through real processes: resume with Last-Event-ID, many open streams."""

from __future__ import annotations

import concurrent.futures
import time

import requests

from tests.conftest import api_login, wait_run
from tests.observability.sse import Stream, pump


def slow_flow(sink_url: str, name: str = "slow") -> dict:
    """one → flaky (fails once, retried) → two; every call takes a moment so a run lasts a few seconds."""
    return {
        "name": name,
        "nodes": [
            {"id": "one", "connector": "http", "config": {"url": f"{sink_url}/one"}},
            {"id": "flaky", "connector": "http", "config": {"url": f"{sink_url}/flaky"},
             "retry": {"max_attempts": 3, "backoff_seconds": 0.3}},
            {"id": "two", "connector": "http", "config": {"url": f"{sink_url}/two"}},
        ],
        "edges": [{"from": "one", "to": "flaky"}, {"from": "flaky", "to": "two"}],
    }


def start(base: str, headers: dict, sink, name: str = "slow") -> tuple[int, int]:
    sink.respond("/one", (200, {"one": True}, 0.4))
    sink.respond("/flaky", (503, {"error": "busy"}, 0.3), (200, {"flaky": "ok"}, 0.3))
    sink.respond("/two", (200, {"two": True}, 0.4))
    flow = requests.post(f"{base}/api/v1/flows", json=slow_flow(sink.url, name), headers=headers, timeout=10)
    assert flow.status_code == 201, flow.text
    run = requests.post(f"{base}/api/v1/flows/{flow.json()['id']}/runs", json={"payload": {}}, headers=headers,
                        timeout=10)
    assert run.status_code == 202, run.text
    return flow.json()["id"], run.json()["id"]


def _ended(events) -> bool:
    return any(e.event == "end" for e in events)


def test_run_stream_resumes_with_last_event_id_exactly_once_in_order(backend, processes, sink, sse):
    if backend.scale_out:
        base = processes.api(backend.env)
        processes.start(["worker", "--concurrency", "2"], backend.env, "worker")
    else:
        base = processes.serve(backend.env)
    headers = api_login(base)
    _, run_id = start(base, headers, sink)

    first = sse(f"{base}/api/v1/runs/{run_id}/events", headers)
    first.read_until(lambda evs: len(evs) >= 3)
    first.close()  # disconnect mid-run
    assert first.status == 200 and first.headers["content-type"].startswith("text/event-stream")
    got = list(first.events)
    assert not _ended(got), "the run should still be going when we disconnect"

    # reconnect as a browser does: the id of the last event received
    second = sse(f"{base}/api/v1/runs/{run_id}/events", headers | {"Last-Event-ID": got[-1].id})
    second.read_until(_ended, timeout=90)
    second.close()
    got += [e for e in second.events if e.event != "end"]

    # the whole log, read afterwards in one go
    full = sse(f"{base}/api/v1/runs/{run_id}/events?follow=false", headers)
    full.read_until(_ended)
    log = [e for e in full.events if e.event != "end"]

    seqs = [e.int_id for e in got]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # every event once, in order
    assert [(e.int_id, e.data["type"], e.data["node_id"]) for e in got] == [
        (e.int_id, e.data["type"], e.data["node_id"]) for e in log]
    types = [e.data["type"] for e in got]
    assert types[0] == "run.created" and types[-1] == "run.finished"
    assert ("node.retrying", "flaky") in [(e.data["type"], e.data["node_id"]) for e in got]
    assert all(e.data["run_id"] == run_id and e.data["seq"] == e.int_id for e in got)
    assert wait_run(base, headers, run_id)["status"] == "succeeded"


def test_workspace_stream_resumes_with_last_event_id(backend, processes, sink, sse):
    if backend.scale_out:
        base = processes.api(backend.env)
        processes.start(["worker", "--concurrency", "2"], backend.env, "worker")
    else:
        base = processes.serve(backend.env)
    headers = api_login(base)
    stream = sse(f"{base}/api/v1/events", headers)
    stream.read_until(lambda evs: stream.status == 200, timeout=30)  # connected: from here on, all new
    _, run_id = start(base, headers, sink)

    stream.read_until(lambda evs: len(evs) >= 4)
    stream.close()
    got = list(stream.events)
    again = sse(f"{base}/api/v1/events", headers | {"Last-Event-ID": got[-1].id})
    again.read_until(lambda evs: any(e.data.get("type") == "run.finished" for e in evs), timeout=90)
    again.close()
    got += again.events

    ids = [e.int_id for e in got]
    assert ids == sorted(set(ids)), ids  # global ids, increasing, no duplicates
    seqs = [e.data["seq"] for e in got if e.data["run_id"] == run_id]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # and nothing of the run missing
    assert got[-1].data["type"] == "run.finished"


def test_a_hundred_open_streams_stay_live_and_the_api_answers(sqlite_backend, processes, sink, sse):
    base = processes.api(sqlite_backend.env)  # one gevent worker process
    processes.start(["worker", "--concurrency", "2"], sqlite_backend.env, "worker")
    headers = api_login(base)

    streams: list[Stream] = []

    def open_one(_):
        s = sse(f"{base}/api/v1/events", headers)
        s.read_until(lambda evs: s.status == 200, timeout=60)  # headers arrived: the stream is being served
        return s

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        streams = list(pool.map(open_one, range(100)))
    try:
        assert len(streams) == 100 and all(s.status == 200 for s in streams)
        # the API still answers quickly with 100 streams open (generous bound: a loaded 2-core machine)
        for _ in range(5):
            t0 = time.monotonic()
            assert requests.get(f"{base}/health", timeout=10).status_code == 200
            assert time.monotonic() - t0 < 2.0
        me = requests.get(f"{base}/api/v1/runs", headers=headers, timeout=10)
        assert me.status_code == 200

        _, run_id = start(base, headers, sink)

        def finished(s: Stream) -> bool:
            return any(e.data.get("run_id") == run_id and e.data.get("type") == "run.finished" for e in s.events)

        pump(streams, finished, timeout=120)
        for s in streams:
            seqs = [e.data["seq"] for e in s.events if e.data.get("run_id") == run_id]
            assert seqs == list(range(1, len(seqs) + 1)), seqs
    finally:
        for s in streams:
            s.close()
