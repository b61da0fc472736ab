"""Workspaces: a user of another workspace gets 404 (never 403) on every object route of the first."""

from __future__ import annotations

import re

import pytest

from hub.runtime import execute_node
from tests.security.helpers import add_user, make_flow, make_key

# Bodies that pass validation, so that what answers is the ownership check (not a 422 before it).
BODIES = {
    ("PUT", "/api/v1/flows/<int:flow_id>"): {"name": "hello", "nodes": []},
    ("POST", "/api/v1/flows/<int:flow_id>/runs"): {"payload": {}},
    ("POST", "/api/v1/flows/<int:flow_id>/triggers"): {"type": "webhook"},
    ("POST", "/api/v1/flows/<int:flow_id>/duplicate"): {"name": "stolen"},
    ("PUT", "/api/v1/triggers/<int:trigger_id>"): {"type": "webhook"},
    ("PATCH", "/api/v1/triggers/<int:trigger_id>"): {"enabled": False},
    ("POST", "/api/v1/triggers/<int:trigger_id>/rotate"): {"what": "token"},
    ("PUT", "/api/v1/secrets/<string:name>"): {"value": "stolen-value"},
    ("PUT", "/api/v1/workspaces/<int:workspace_id>"): {"name": "stolen"},
    ("POST", "/api/v1/workspaces/<int:workspace_id>/members"): {"email": "b@example.com", "role": "admin"},
    ("PUT", "/api/v1/workspaces/<int:workspace_id>/members/<int:user_id>"): {"role": "viewer"},
}
# Not workspace objects: users are the hub administrators' business (403 for everyone else, tested in
# test_roles.py), so "someone else's user" is not a secret there.
NOT_WORKSPACE_OBJECTS = {"/api/v1/users/<int:user_id>"}


@pytest.fixture
def first_workspace(client, auth, hub):
    """Workspace A with one of every kind of object, including a finished (failed) run."""
    h = auth.headers
    flow = make_flow(client, h)
    doc = {"name": "hello", "nodes": [{"id": "get", "connector": "http", "retry": {"max_attempts": 1},
                                       "config": {"url": "http://127.0.0.1:9/"}}]}
    assert client.put(f"/api/v1/flows/{flow['id']}", json=doc, headers=h).status_code == 200
    trigger = client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "webhook"}, headers=h).get_json()
    run = client.post(f"/api/v1/flows/{flow['id']}/runs", json={"payload": {}}, headers=h).get_json()
    execute_node(run["id"], "get", hub.runtime)  # fails: connection refused, one attempt
    assert client.get(f"/api/v1/runs/{run['id']}", headers=h).get_json()["status"] == "failed"
    assert client.post("/api/v1/secrets", json={"name": "TOKEN", "value": "value-of-a"},
                       headers=h).status_code == 201
    key = make_key(client, h, ["admin"])
    me = client.get("/api/v1/auth/me", headers=h).get_json()
    ids = {"flow_id": flow["id"], "trigger_id": trigger["id"], "run_id": run["id"], "key_id": key["id"],
           "name": "TOKEN", "workspace_id": me["workspace_id"], "user_id": me["id"], "version": 1,
           "node_id": "get"}
    letters = client.get("/api/v1/dead-letters", headers=h)
    if letters.status_code == 200 and letters.get_json().get("items"):
        for name in ("dead_letter_id", "letter_id", "id"):
            ids[name] = letters.get_json()["items"][0]["id"]
    return ids


def _object_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and rule.arguments and rule.rule not in NOT_WORKSPACE_OBJECTS:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield method, rule


def test_every_object_route_of_another_workspace_is_404(app, client, auth, first_workspace):
    other = add_user(client, auth.headers, "b@example.com")
    make_flow(client, other.headers)  # B has objects of its own: a 404 is not just "nothing here"
    key = make_key(client, other.headers, ["admin"])["key"]
    checked = []
    for method, rule in _object_routes(app):
        missing = [a for a in rule.arguments if a not in first_workspace]
        assert not missing, f"{method} {rule.rule}: add an object of workspace A for {missing} to the fixture"
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:[a-z]+:)?{arg}>", str(first_workspace[arg]), url)
        body = BODIES.get((method, rule.rule))
        for who, headers in (("token", other.headers), ("api key", {"X-API-Key": key})):
            r = client.open(url, method=method, json=body, headers=headers)
            assert r.status_code == 404, f"{who}: {method} {url} → {r.status_code} {r.get_data(as_text=True)[:300]}"
            assert r.mimetype == "application/problem+json"
        checked.append(f"{method} {rule.rule}")
    assert len(checked) >= 20, checked

    # A's objects are untouched and still A's
    assert auth.client.get("/api/v1/secrets", headers=auth.headers).get_json()["items"][0]["name"] == "TOKEN"


def test_acting_in_another_workspace_by_header_is_404(client, auth, first_workspace):
    other = add_user(client, auth.headers, "b@example.com")
    ws = str(first_workspace["workspace_id"])
    for headers in (other.headers | {"X-Workspace-Id": ws},
                    {"X-API-Key": make_key(client, other.headers, ["read"])["key"], "X-Workspace-Id": ws}):
        r = client.get("/api/v1/flows", headers=headers)
        assert r.status_code == 404 and r.get_json()["code"] == "workspace_not_found"
    assert client.get("/api/v1/flows", headers=other.headers | {"X-Workspace-Id": "x"}).status_code == 400
    # lists only ever show one's own workspace
    for path in ("/api/v1/flows", "/api/v1/runs", "/api/v1/secrets", "/api/v1/api-keys"):
        assert client.get(path, headers=other.headers).get_json()["total"] in (0, 1), path
    assert [w["id"] for w in client.get("/api/v1/workspaces", headers=other.headers).get_json()["items"]] == [
        other.workspace_id]


def test_a_member_of_two_workspaces_switches_with_the_header(client, auth, first_workspace):
    other = add_user(client, auth.headers, "b@example.com")
    ws = first_workspace["workspace_id"]
    r = client.post(f"/api/v1/workspaces/{ws}/members", json={"email": "b@example.com", "role": "viewer"},
                    headers=auth.headers)
    assert r.status_code == 201
    mine = client.get("/api/v1/flows", headers=other.headers).get_json()
    theirs = client.get("/api/v1/flows", headers=other.headers | {"X-Workspace-Id": str(ws)}).get_json()
    assert mine["total"] == 0 and theirs["total"] == 1
    me = client.get("/api/v1/auth/me", headers=other.headers | {"X-Workspace-Id": str(ws)}).get_json()
    assert me["workspace_id"] == ws and me["role"] == "viewer"
