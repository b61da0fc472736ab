"""Run control and dead letters end to end: real API and worker processes on PostgreSQL + Redis."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import api_login, wait_run, wait_until


@pytest.fixture
def hub_procs(postgres_backend, processes):
    """An API process and one worker with a single slot (so a stuck attempt would block it)."""
    base = processes.api(postgres_backend.env)
    processes.start(["worker", "--concurrency", "1"], postgres_backend.env, "worker")
    return base, api_login(base)


def _flow(base, headers, doc) -> int:
    r = requests.post(f"{base}/api/v1/flows", json=doc, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _start(base, headers, flow_id) -> int:
    r = requests.post(f"{base}/api/v1/flows/{flow_id}/runs", json={"payload": {}}, headers=headers, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _get(base, headers, run_id) -> dict:
    return requests.get(f"{base}/api/v1/runs/{run_id}", headers=headers, timeout=10).json()


def _post(base, headers, path, json=None) -> requests.Response:
    return requests.post(f"{base}{path}", json=json, headers=headers, timeout=10)



def chain(sink_url: str, **b) -> dict:
    return {
        "name": "chain",
        "nodes": [
            {"id": "a", "connector": "http", "config": {"url": f"{sink_url}/a"}, "timeout_seconds": 120},
            {"id": "b", "connector": "http", "config": {"url": f"{sink_url}/b"}, **b},
            {"id": "c", "connector": "http", "config": {"url": f"{sink_url}/c"}},
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    }


def test_cancel_kills_the_attempt_in_the_worker_and_skips_the_rest(hub_procs, sink):
    base, headers = hub_procs
    sink.respond("/a", (200, {"slow": True}, 60))
    run_id = _start(base, headers, _flow(base, headers, chain(sink.url)))
    wait_until("the attempt to reach the sink", lambda: sink.hits("/a"))

    r = _post(base, headers, f"/api/v1/runs/{run_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    run = _get(base, headers, run_id)
    assert {n["id"]: n["status"] for n in run["nodes"]} == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert [a["status"] for a in run["nodes"][0]["attempt_history"]] == ["cancelled"]

    # The worker has one slot and the sink holds /a for 60 s: a second run can only finish this
    # soon if the worker killed the cancelled attempt's sandbox.
    fast = _flow(base, headers, {"name": "fast", "nodes": [
        {"id": "x", "connector": "http", "config": {"url": f"{sink.url}/x"}}]})
    second = wait_run(base, headers, _start(base, headers, fast), timeout=40)
    assert second["status"] == "succeeded"
    # the cancelled attempt's late result did not resurrect anything
    run = _get(base, headers, run_id)
    assert run["status"] == "cancelled"
    assert sink.hits("/b") == [] and len(sink.hits("/a")) == 1

    again = _post(base, headers, f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "run_finished"
    missing = _post(base, headers, "/api/v1/runs/999999/cancel")
    assert missing.status_code == 404 and missing.json()["code"] == "run_not_found"


def test_pause_holds_the_next_node_until_resume(hub_procs, sink):
    base, headers = hub_procs
    sink.respond("/a", (200, {"a": 1}, 1.5))
    run_id = _start(base, headers, _flow(base, headers, chain(sink.url)))
    wait_until("a to start", lambda: sink.hits("/a"))

    r = _post(base, headers, f"/api/v1/runs/{run_id}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    # a (already running) finishes and is recorded; b is ready but does not start
    run = wait_until("a to finish", lambda: (lambda x: x if x["nodes"][0]["status"] == "succeeded" else None)(
        _get(base, headers, run_id)))
    assert run["status"] == "paused"
    time.sleep(2)
    run = _get(base, headers, run_id)
    assert run["status"] == "paused" and run["nodes"][1]["status"] == "ready"
    assert sink.hits("/b") == []
    assert _post(base, headers, f"/api/v1/runs/{run_id}/pause").json()["code"] == "run_not_running"

    r = _post(base, headers, f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 202 and r.json()["status"] == "running", r.text
    run = wait_run(base, headers, run_id)
    assert run["status"] == "succeeded"
    assert len(sink.hits("/b")) == 1 and len(sink.hits("/c")) == 1
    r = _post(base, headers, f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 409 and r.json()["code"] == "run_not_paused"


def test_retry_from_failed_keeps_what_succeeded(hub_procs, sink):
    base, headers = hub_procs
    sink.respond("/b", (404, {"missing": True}), (200, {"found": True}))
    run_id = _start(base, headers, _flow(base, headers, chain(sink.url)))
    run = wait_run(base, headers, run_id)
    assert run["status"] == "failed"
    assert {n["id"]: n["status"] for n in run["nodes"]} == {"a": "succeeded", "b": "failed", "c": "skipped"}

    bad = _post(base, headers, f"/api/v1/runs/{run_id}/retry", {"nodes": "b"})
    assert bad.status_code == 422 and "nodes" in bad.json()["errors"]
    unknown = _post(base, headers, f"/api/v1/runs/{run_id}/retry", {"nodes": ["zzz"]})
    assert unknown.status_code == 409 and unknown.json()["code"] == "node_not_found"

    r = _post(base, headers, f"/api/v1/runs/{run_id}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["id"] == run_id and r.json()["status"] == "running"
    run = wait_run(base, headers, run_id)
    assert run["status"] == "succeeded"
    nodes = {n["id"]: n for n in run["nodes"]}
    assert [a["number"] for a in nodes["b"]["attempt_history"]] == [1, 2]
    assert [a["number"] for a in nodes["a"]["attempt_history"]] == [1]
    assert len(sink.hits("/a")) == 1 and len(sink.hits("/b")) == 2 and len(sink.hits("/c")) == 1
    keys = [h.headers["Idempotency-Key"] for h in sink.hits("/b")]
    assert len(set(keys)) == 2

    done = _post(base, headers, f"/api/v1/runs/{run_id}/retry")
    assert done.status_code == 409 and done.json()["code"] == "run_succeeded"


def test_dead_letter_is_listed_and_redriven(hub_procs, sink):
    base, headers = hub_procs
    sink.respond("/b", (503, {}), (503, {}), (200, {"at last": True}))
    flow_id = _flow(base, headers, chain(sink.url, retry={"max_attempts": 2, "backoff_seconds": 0}))
    run_id = _start(base, headers, flow_id)
    assert wait_run(base, headers, run_id)["status"] == "failed"

    page = requests.get(f"{base}/api/v1/dead-letters", params={"status": "open"}, headers=headers,
                        timeout=10).json()
    assert page["total"] == 1
    letter = page["items"][0]
    assert (letter["run_id"], letter["flow_id"], letter["node_id"], letter["attempts"], letter["status"]) == (
        run_id, flow_id, "b", 2, "open")
    assert letter["error"]["retryable"] is True

    r = _post(base, headers, f"/api/v1/dead-letters/{letter['id']}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "redriven" and r.json()["redriven_at"]
    run = wait_run(base, headers, run_id)
    assert run["status"] == "succeeded"
    assert len(sink.hits("/b")) == 3 and len(sink.hits("/c")) == 1 and len(sink.hits("/a")) == 1

    again = _post(base, headers, f"/api/v1/dead-letters/{letter['id']}/retry")
    assert again.status_code == 409 and again.json()["code"] == "dead_letter_redriven"
    assert requests.get(f"{base}/api/v1/dead-letters", params={"status": "open"}, headers=headers,
                        timeout=10).json()["total"] == 0
    missing = requests.get(f"{base}/api/v1/dead-letters/99999", headers=headers, timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "dead_letter_not_found"
    bad = requests.get(f"{base}/api/v1/dead-letters", params={"status": "nope"}, headers=headers, timeout=10)
    assert bad.status_code == 422
