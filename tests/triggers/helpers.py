"""Helpers for the trigger tests: flows and triggers through the real API."""

from __future__ import annotations

from hub.models import Run

ECHO_FLOW = {
    "name": "echo",
    "output": "{{ nodes.shape.output }}",
    "nodes": [{"id": "shape", "connector": "transform", "config": {"value": {"got": "{{ trigger.body }}"}}}],
}


def make_flow(client, auth, doc=None) -> dict:
    r = client.post("/api/v1/flows", json=doc or ECHO_FLOW, headers=auth.headers)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def make_trigger(client, auth, flow_id, **settings) -> dict:
    r = client.post(f"/api/v1/flows/{flow_id}/triggers", json={"type": "webhook", **settings}, headers=auth.headers)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def hook_path(trigger: dict) -> str:
    return "/hooks/" + trigger["url"].rsplit("/hooks/", 1)[1]


def run_count() -> int:
    return Run.select().count()
