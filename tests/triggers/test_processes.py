"""Webhooks against real ``hookhub`` processes: concurrent duplicates, and SIGKILL right after a 202."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import api_login, wait_run

SECRET = "concurrency-secret"
FLOW = {"name": "echo", "output": "{{ nodes.shape.output }}",
        "nodes": [{"id": "shape", "connector": "transform", "config": {"value": {"got": "{{ trigger.body }}"}}}]}


def _setup(base: str, trigger: dict, flow: dict = FLOW) -> tuple[dict, dict, int, str]:
    headers = api_login(base)
    r = requests.post(base + "/api/v1/flows", json=flow, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    flow_id = r.json()["id"]
    r = requests.post(f"{base}/api/v1/flows/{flow_id}/triggers", json={"type": "webhook", **trigger},
                      headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    return headers, r.json(), flow_id, "/hooks/" + r.json()["url"].rsplit("/hooks/", 1)[1]


def test_the_same_delivery_sent_50_times_concurrently_creates_one_run(backend, processes):
    # Two API processes on the same database: the copies race across processes, not only threads.
    bases = [processes.api(backend.env), processes.api(backend.env)]
    headers, trigger, flow_id, path = _setup(bases[0], {"verify": {"scheme": "github", "secret": SECRET}})
    body = b'{"action": "opened", "number": 42}'
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    hook_headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig,
                    "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}

    def send(i: int) -> requests.Response:
        return requests.post(bases[i % 2] + path, data=body, headers=hook_headers, timeout=60)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, range(50)))
    assert [a.status_code for a in answers] == [202] * 50, [a.text for a in answers if a.status_code != 202]
    run_ids = {a.json()["run_id"] for a in answers}
    assert len(run_ids) == 1, run_ids
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    runs = requests.get(f"{bases[1]}/api/v1/runs?flow_id={flow_id}", headers=headers, timeout=30).json()
    assert runs["total"] == 1 and runs["items"][0]["id"] == run_ids.pop()
    log = requests.get(f"{bases[0]}/api/v1/triggers/{trigger['id']}/deliveries?page_size=100", headers=headers,
                       timeout=30).json()
    statuses = sorted(d["status"] for d in log["items"])
    assert statuses == ["accepted"] + ["duplicate"] * 49


def test_sigkill_right_after_202_loses_nothing(backend, processes, sink):
    """The whole serve tree is SIGKILLed the moment it answers 202; after a restart the run finishes."""
    sink.respond("/slow", (200, {"ok": True}, 1.5))
    flow = {"name": "slow", "output": "{{ nodes.call.output.body }}",
            "nodes": [{"id": "call", "connector": "http", "timeout_seconds": 5,
                       "retry": {"max_attempts": 5, "backoff_seconds": 0.2},
                       "config": {"method": "POST", "url": sink.url + "/slow", "json": "{{ trigger.body }}"}}]}
    base = processes.serve(backend.env)
    headers, trigger, flow_id, path = _setup(base, {}, flow)
    server = processes.procs[-1]
    r = requests.post(base + path, json={"order": 1}, timeout=30)
    os.killpg(server.pid, signal.SIGKILL)  # serve, its API, worker and scheduler: all at once
    server.wait(timeout=30)
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]

    base = processes.serve(backend.env)
    run = wait_run(base, api_login(base), run_id, timeout=120)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"ok": True}
    assert any(h.body == b'{"order": 1}' or b'"order"' in h.body for h in sink.hits("/slow"))


def test_a_schedule_fires_in_a_real_scheduler_process(sqlite_backend, processes):
    base = processes.serve(sqlite_backend.env)
    headers = api_login(base)
    flow_id = requests.post(base + "/api/v1/flows", json=FLOW, headers=headers, timeout=30).json()["id"]
    r = requests.post(f"{base}/api/v1/flows/{flow_id}/triggers", json={
        "type": "schedule", "cron": "* * * * *", "timezone": "Europe/Berlin", "payload": {"tick": True}},
        headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    first = r.json()["next_fire_times"][0]
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        runs = requests.get(f"{base}/api/v1/runs?flow_id={flow_id}", headers=headers, timeout=30).json()
        if runs["total"]:
            break
        time.sleep(1)
    assert runs["total"] >= 1, "the scheduler fired nothing within 150 s"
    run = wait_run(base, headers, runs["items"][-1]["id"])
    assert run["status"] == "succeeded"
    assert run["trigger"]["scheduled_at"].replace("Z", "") == first.replace(".000Z", "")
    assert run["output"] == {"got": {"tick": True}}


def test_rate_limit_holds_across_api_processes_with_redis(postgres_backend, processes):
    bases = [processes.api(postgres_backend.env), processes.api(postgres_backend.env)]
    headers, trigger, flow_id, path = _setup(bases[0], {"rate_limit": "6/minute"})
    codes = [requests.post(bases[i % 2] + path, json={"i": i}, timeout=30).status_code for i in range(12)]
    assert codes == [202] * 6 + [429] * 6, codes
    runs = requests.get(f"{bases[1]}/api/v1/runs?flow_id={flow_id}", headers=headers, timeout=30).json()
    assert runs["total"] == 6
