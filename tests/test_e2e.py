"""End to end through real processes: a webhook starts fetch → (a, b in parallel) → join."""

from __future__ import annotations

import hashlib

import requests

from tests.conftest import api_login, wait_run


def diamond(sink_url: str) -> dict:
    return {
        "name": "diamond",
        "output": "{{ nodes.join.output.body }}",
        "nodes": [
            {"id": "fetch", "connector": "http",
             "config": {"method": "POST", "url": f"{sink_url}/fetch", "json": {"order": "{{ trigger.body.order }}"}}},
            {"id": "a", "connector": "http", "config": {"url": f"{sink_url}/a?n={{{{ nodes.fetch.output.status }}}}"}},
            {"id": "b", "connector": "http", "config": {"url": f"{sink_url}/b"}},
            {"id": "join", "connector": "http",
             "config": {"method": "POST", "url": f"{sink_url}/join",
                        "json": {"a": "{{ nodes.a.output.body.path }}", "b": "{{ nodes.b.output.status }}"}}},
        ],
        "edges": [
            {"from": "fetch", "to": "a"}, {"from": "fetch", "to": "b"},
            {"from": "a", "to": "join"}, {"from": "b", "to": "join"},
        ],
    }


def test_webhook_runs_a_diamond_to_success(backend, processes, sink):
    if backend.scale_out:
        base = processes.api(backend.env)
        processes.start(["worker", "--concurrency", "2"], backend.env, "worker")
        processes.start(["worker", "--concurrency", "2"], backend.env, "worker")
    else:
        base = processes.serve(backend.env)
    headers = api_login(base)
    sink.respond("/join", (200, {"joined": True}))

    flow = requests.post(f"{base}/api/v1/flows", json=diamond(sink.url), headers=headers, timeout=10)
    assert flow.status_code == 201, flow.text
    trigger = requests.post(f"{base}/api/v1/flows/{flow.json()['id']}/triggers", json={"type": "webhook"},
                            headers=headers, timeout=10).json()
    accepted = requests.post(trigger["url"], json={"order": 42}, timeout=10)
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]

    run = wait_run(base, headers, run_id)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"joined": True}
    assert {n["id"]: n["status"] for n in run["nodes"]} == {
        "fetch": "succeeded", "a": "succeeded", "b": "succeeded", "join": "succeeded"}
    for path in ("/fetch", "/a", "/b", "/join"):
        assert len(sink.hits(path)) == 1, path
    assert sink.hits("/fetch")[0].body == b'{"order": 42}'
    assert sink.hits("/a")[0].path == "/a?n=200"
    # the connector passes the attempt's key downstream so receivers can deduplicate too
    join = sink.hits("/join")[0]
    assert join.headers["Idempotency-Key"] == hashlib.sha256(f"{run_id}:join:1".encode()).hexdigest()
    assert join.body == b'{"a": "/a?n=200", "b": 200}'
