"""Faults with real processes on PostgreSQL + Redis: a worker killed with SIGKILL mid-node, and every
queue message delivered more than once. The database is the truth; neither may change an outcome."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import requests

from hub.engine import idempotency_key
from tests.conftest import api_login, wait_run, wait_until


def _keys(sink, path: str) -> list[str]:
    return [h.headers.get("Idempotency-Key") for h in sink.hits(path)]


def test_sigkill_of_the_worker_running_a_node(postgres_backend, processes, sink):
    env = postgres_backend.env | {"HOOKHUB_LEASE_GRACE_SECONDS": "2", "HOOKHUB_REAPER_INTERVAL_SECONDS": "0.5"}
    base = processes.api(env)
    workers = {p.pid: p for p in (processes.start(["worker", "--concurrency", "2"], env, "worker"),
                                  processes.start(["worker", "--concurrency", "2"], env, "worker"))}
    headers = api_login(base)
    # The first request hangs far longer than the node's timeout: only a dead worker can make the
    # attempt *lost* (a live one would time it out and record a failure).
    sink.respond("/slow", (200, {"first": True}, 30), (200, {"second": True}))
    doc = {
        "name": "crash",
        "output": "{{ nodes.after.output.body }}",
        "nodes": [
            {"id": "slow", "connector": "http", "config": {"method": "POST", "url": f"{sink.url}/slow"},
             "timeout_seconds": 5, "retry": {"max_attempts": 3, "backoff_seconds": 0}},
            {"id": "after", "connector": "http", "config": {"url": f"{sink.url}/after"}},
        ],
        "edges": [{"from": "slow", "to": "after"}],
    }
    flow = requests.post(f"{base}/api/v1/flows", json=doc, headers=headers, timeout=10)
    assert flow.status_code == 201, flow.text
    started = time.monotonic()
    run_id = requests.post(f"{base}/api/v1/flows/{flow.json()['id']}/runs", json={"payload": {}},
                           headers=headers, timeout=10).json()["id"]

    wait_until("the first attempt to reach the sink", lambda: sink.hits("/slow"))

    def first_attempt():
        run = requests.get(f"{base}/api/v1/runs/{run_id}", headers=headers, timeout=10).json()
        history = run["nodes"][0]["attempt_history"]
        return history[0] if history else None

    attempt = wait_until("the attempt row", first_attempt)
    assert attempt["status"] == "running"
    host, _, pid = attempt["worker"].rpartition(":")
    victim = workers[int(pid)]  # the worker field names one of our two workers
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    run = wait_run(base, headers, run_id, timeout=60)
    recovered_in = time.monotonic() - killed_at
    assert run["status"] == "succeeded", run
    assert run["output"] == {"ok": True, "path": "/after"}
    slow, after = run["nodes"]
    assert [(a["number"], a["status"]) for a in slow["attempt_history"]] == [(1, "lost"), (2, "succeeded")]
    assert "lost" in slow["attempt_history"][0]["error"]["message"]
    survivor = next(p for p in workers if p != victim.pid)
    assert slow["attempt_history"][1]["worker"] == f"{host}:{survivor}"
    assert after["status"] == "succeeded"
    # exactly one request per attempt key
    assert _keys(sink, "/slow") == [idempotency_key(run_id, "slow", 1), idempotency_key(run_id, "slow", 2)]
    assert _keys(sink, "/after") == [idempotency_key(run_id, "after", 1)]
    # recovery: lease (timeout 5 s + grace 2 s) plus a reaper pass, not a minute
    assert recovered_in < 45, recovered_in
    print(f"recovered {recovered_in:.1f} s after the kill ({time.monotonic() - started:.1f} s in all)")
    try:  # what the dead worker left in its process group (its sandbox zygote), ours to clean up
        os.killpg(victim.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_every_message_delivered_again_and_again_changes_no_outcome(postgres_backend, processes, sink):
    """Real workers; the test floods the queue with duplicates of every execute_node message."""
    from hub.config import load_settings
    from hub.core import Hub
    from hub.db import connection
    from hub.models import Attempt, NodeRun, Run

    env = postgres_backend.env
    base = processes.api(env)
    for _ in range(2):
        processes.start(["worker", "--concurrency", "2"], env, "worker")
    headers = api_login(base)
    doc = {
        "name": "diamond",
        "output": "{{ nodes.join.output }}",
        "nodes": [
            {"id": "fetch", "connector": "http", "config": {"url": f"{sink.url}/fetch"}},
            {"id": "a", "connector": "http", "config": {"url": f"{sink.url}/a"}},
            {"id": "b", "connector": "http", "config": {"url": sink.url + "/b/{{ trigger.body.n }}"},
             "retry": {"max_attempts": 3, "backoff_seconds": 0}},
            {"id": "join", "connector": "transform",
             "config": {"value": {"a": "{{ nodes.a.output.status }}", "b": "{{ nodes.b.output.status }}"}}},
        ],
        "edges": [{"from": "fetch", "to": "a"}, {"from": "fetch", "to": "b"},
                  {"from": "a", "to": "join"}, {"from": "b", "to": "join"}],
    }
    # b fails retryably once in every run, then succeeds: retries (ETA messages) get duplicated too.
    # One path per run, so concurrent runs cannot take each other's successes.
    for i in range(8):
        sink.respond(f"/b/{i}", (503, {}), (200, {}))
    flow_id = requests.post(f"{base}/api/v1/flows", json=doc, headers=headers, timeout=10).json()["id"]

    hub = Hub(load_settings(dict(env), dotenv=False))
    task = hub.tasks["execute_node"]
    stop = threading.Event()
    sent = collections.Counter()

    def flood():
        while not stop.is_set():
            with connection():
                rows = list(NodeRun.select(NodeRun.run, NodeRun.node_id))
            for row in rows:
                for _ in range(2):
                    task(row.run_id, row.node_id)
                    sent[row.node_id] += 1
            stop.wait(0.05)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        runs = [requests.post(f"{base}/api/v1/flows/{flow_id}/runs", json={"payload": {"n": i}},
                              headers=headers, timeout=10).json()["id"] for i in range(8)]
        finished = [wait_run(base, headers, run_id, timeout=90) for run_id in runs]
        time.sleep(1)  # duplicates of finished nodes are still being delivered: they must change nothing
    finally:
        stop.set()
        flooder.join()
        hub.close()
    assert sum(sent.values()) > 100, sent  # the flood really happened
    for run in finished:
        assert run["status"] == "succeeded", run
        assert run["output"] == {"a": 200, "b": 200}
    with connection():
        for run_id in runs:
            assert Run.get_by_id(run_id).status == "succeeded"
        attempts = list(Attempt.select())
    keys = [a.key for a in attempts]
    assert len(keys) == len(set(keys))
    per_node = collections.Counter((a.run_id, a.node_id) for a in attempts if a.status == "succeeded")
    assert set(per_node.values()) == {1} and len(per_node) == 4 * len(runs)
    # every request the sink saw carried a distinct key, and every key belongs to a recorded attempt
    for path in ("/fetch", "/a", *(f"/b/{i}" for i in range(8))):
        seen = _keys(sink, path)
        assert len(seen) == len(set(seen)), path
        assert set(seen) <= set(keys)
    assert len(sink.hits("/fetch")) == len(runs) and len(sink.hits("/a")) == len(runs)
    b_attempts = [a for a in attempts if a.node_id == "b"]
    assert sum(len(sink.hits(f"/b/{i}")) for i in range(8)) == len(b_attempts)
