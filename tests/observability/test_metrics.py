"""/metrics values checked against a known sequence of runs (real processes, real sandbox kills)."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import api_login, wait_run


def scrape(base: str) -> dict[str, dict[tuple, float]]:
    r = requests.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics, name: str, **labels) -> float:
    return metrics[name][tuple(sorted(labels.items()))]


def run_flow(base, headers, doc) -> dict:
    flow = requests.post(f"{base}/api/v1/flows", json=doc, headers=headers, timeout=10)
    assert flow.status_code == 201, flow.text
    run = requests.post(f"{base}/api/v1/flows/{flow.json()['id']}/runs", json={"payload": {}}, headers=headers,
                        timeout=10)
    assert run.status_code == 202, run.text
    return wait_run(base, headers, run.json()["id"], timeout=90)


def test_metrics_match_a_known_sequence_of_runs(sqlite_backend, processes, sink):
    base = processes.serve(sqlite_backend.env)
    headers = api_login(base)
    before = scrape(base)
    assert value(before, "hookhub_runs", status="succeeded") == 0

    ok = {"name": "ok", "nodes": [{"id": "t", "connector": "transform", "config": {"value": 1}}]}
    assert run_flow(base, headers, ok)["status"] == "succeeded"
    # the second "ok" run arrives through a webhook: one delivery
    flow_id = requests.get(f"{base}/api/v1/flows", headers=headers, timeout=10).json()["items"][0]["id"]
    trigger = requests.post(f"{base}/api/v1/flows/{flow_id}/triggers", json={"type": "webhook"}, headers=headers,
                            timeout=10).json()
    accepted = requests.post(trigger["url"], json={}, timeout=10)
    assert accepted.status_code == 202, accepted.text
    assert wait_run(base, headers, accepted.json()["run_id"])["status"] == "succeeded"

    sink.respond("/flaky", (503, {}), (503, {}), (200, {"ok": True}))
    flaky = {"name": "flaky", "nodes": [{"id": "f", "connector": "http", "config": {"url": f"{sink.url}/flaky"},
                                         "retry": {"max_attempts": 3, "backoff_seconds": 0.1}}]}
    assert run_flow(base, headers, flaky)["status"] == "succeeded"

    sink.respond("/broken", (500, {}))
    broken = {"name": "broken", "nodes": [{"id": "b", "connector": "http", "config": {"url": f"{sink.url}/broken"},
                                           "retry": {"max_attempts": 2, "backoff_seconds": 0.1}}]}
    assert run_flow(base, headers, broken)["status"] == "failed"

    sink.respond("/slow", (200, {}, 5))
    slow = {"name": "slow", "nodes": [{"id": "s", "connector": "http", "timeout_seconds": 1,
                                       "config": {"url": f"{sink.url}/slow", "timeout_seconds": 30},
                                       "retry": {"max_attempts": 1}}]}
    run = run_flow(base, headers, slow)
    assert run["status"] == "failed"
    assert run["nodes"][0]["error"]["kind"] == "timeout", run

    m = scrape(base)
    assert value(m, "hookhub_runs", status="succeeded") == 3
    assert value(m, "hookhub_runs", status="failed") == 2
    assert value(m, "hookhub_runs", status="running") == 0
    assert value(m, "hookhub_nodes", status="succeeded") == 3
    assert value(m, "hookhub_nodes", status="failed") == 2
    assert value(m, "hookhub_attempts", status="succeeded") == 3
    assert value(m, "hookhub_attempts", status="failed") == 2 + 2 + 1
    assert value(m, "hookhub_node_retries") == 2 + 1
    assert value(m, "hookhub_sandbox_kills", reason="timeout") == 1
    assert value(m, "hookhub_sandbox_kills", reason="memory") == 0
    assert sum(m["hookhub_deliveries"].values()) == 1
    # the duration histogram: every finished attempt counted once; the killed one took about a second
    assert value(m, "hookhub_node_duration_seconds_count", status="succeeded") == 3
    assert value(m, "hookhub_node_duration_seconds_count", status="failed") == 5
    assert value(m, "hookhub_node_duration_seconds_bucket", status="failed", le="+Inf") == 5
    assert value(m, "hookhub_node_duration_seconds_bucket", status="failed", le="0.5") == 4
    assert value(m, "hookhub_node_duration_seconds_sum", status="failed") >= 1.0
    assert ("state", "ready") in {k[0] for k in m["hookhub_queue_depth"]}
    if "hookhub_dead_letters" in m:  # dead letters exist once the engine records them
        assert value(m, "hookhub_dead_letters", status="open") == 2
