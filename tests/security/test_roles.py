"""The role matrix: viewer < editor < admin per workspace; hub administrators manage users."""

from __future__ import annotations

import itertools

import pytest

from tests.security.helpers import FLOW, add_user, make_flow

_names = itertools.count()


def _uniq(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


# (what, lowest role that may, request builder given (flow_id, workspace_id, user_ids))
MATRIX = [
    ("list flows", "viewer", lambda f, w, u: ("GET", "/api/v1/flows", None)),
    ("read a flow", "viewer", lambda f, w, u: ("GET", f"/api/v1/flows/{f}", None)),
    ("flow stats", "viewer", lambda f, w, u: ("GET", f"/api/v1/flows/{f}/stats", None)),
    ("export a flow", "viewer", lambda f, w, u: ("GET", f"/api/v1/flows/{f}/export", None)),
    ("create a flow", "editor", lambda f, w, u: ("POST", "/api/v1/flows", FLOW | {"name": _uniq("f")})),
    ("update a flow", "editor", lambda f, w, u: ("PUT", f"/api/v1/flows/{f}", FLOW)),
    ("duplicate a flow", "editor", lambda f, w, u: ("POST", f"/api/v1/flows/{f}/duplicate", {"name": _uniq("d")})),
    ("start a run", "editor", lambda f, w, u: ("POST", f"/api/v1/flows/{f}/runs", {"payload": {}})),
    ("add a trigger", "editor", lambda f, w, u: ("POST", f"/api/v1/flows/{f}/triggers", {"type": "webhook"})),
    ("list runs", "viewer", lambda f, w, u: ("GET", "/api/v1/runs", None)),
    ("list secrets", "viewer", lambda f, w, u: ("GET", "/api/v1/secrets", None)),
    ("create a secret", "editor", lambda f, w, u: ("POST", "/api/v1/secrets", {"name": _uniq("S"), "value": "xxxx"})),
    ("rotate a secret", "editor", lambda f, w, u: ("PUT", "/api/v1/secrets/SHARED", {"value": _uniq("v-")})),
    ("read the workspace", "viewer", lambda f, w, u: ("GET", f"/api/v1/workspaces/{w}", None)),
    ("list members", "viewer", lambda f, w, u: ("GET", f"/api/v1/workspaces/{w}/members", None)),
    ("rename the workspace", "admin", lambda f, w, u: ("PUT", f"/api/v1/workspaces/{w}", {"name": "ws"})),
    ("add a member", "admin", lambda f, w, u: ("POST", f"/api/v1/workspaces/{w}/members",
                                               {"user_id": u["spare"], "role": "viewer"})),
    ("change a role", "admin", lambda f, w, u: ("PUT", f"/api/v1/workspaces/{w}/members/{u['editor']}",
                                                {"role": "editor"})),
]


@pytest.fixture
def team(client, auth):
    flow = make_flow(client, auth.headers)
    r = client.post("/api/v1/secrets", json={"name": "SHARED", "value": "xxxx"}, headers=auth.headers)
    assert r.status_code == 201
    ws = client.get("/api/v1/auth/me", headers=auth.headers).get_json()["workspace_id"]
    members = {}
    for role in ("viewer", "editor", "admin"):
        m = add_user(client, auth.headers, f"team-{role}@example.com")
        assert client.post(f"/api/v1/workspaces/{ws}/members", json={"user_id": m.user_id, "role": role},
                           headers=auth.headers).status_code == 201
        members[role] = m
    return flow["id"], ws, members


@pytest.mark.parametrize("what,needs,build", MATRIX, ids=[m[0] for m in MATRIX])
def test_role_matrix(client, auth, team, what, needs, build):
    flow_id, ws, members = team
    ranks = ["viewer", "editor", "admin"]
    for role, member in members.items():
        spare = add_user(client, auth.headers, f"{_uniq('spare')}@example.com")
        method, url, body = build(flow_id, ws, {"spare": spare.user_id, "editor": members["editor"].user_id})
        r = client.open(url, method=method, json=body, headers=member.headers | {"X-Workspace-Id": str(ws)})
        if ranks.index(role) >= ranks.index(needs):
            assert r.status_code < 300, f"{role} may {what}: {r.status_code} {r.get_json()}"
        else:
            assert r.status_code == 403, f"{role} may not {what}: {r.status_code} {r.get_json()}"
            assert r.get_json()["code"] == "forbidden"


def test_only_hub_admins_manage_users(client, auth, team):
    _, _, members = team
    for member in members.values():  # workspace admin or not: not a hub administrator
        assert client.get("/api/v1/users", headers=member.headers).status_code == 403
        r = client.post("/api/v1/users", json={"email": "x@example.com", "password": "long enough"},
                        headers=member.headers)
        assert r.status_code == 403
    users = client.get("/api/v1/users", headers=auth.headers).get_json()
    assert users["total"] == 4 and all("password" not in str(u) for u in users["items"])


def test_registration_is_closed_by_default_and_first_user_is_admin(client, auth):
    me = client.get("/api/v1/auth/me", headers=auth.headers).get_json()
    assert me["is_admin"] is True and me["role"] == "admin"
    r = client.post("/api/v1/auth/register", json={"email": "late@example.com", "password": "long enough"})
    assert r.status_code == 403 and r.get_json()["code"] == "registration_closed"


def test_open_registration_gives_each_user_a_workspace(hub):
    import dataclasses

    from hub.app import create_app

    hub.settings = dataclasses.replace(hub.settings, open_registration=True)
    client = create_app(hub=hub, test_config={"TESTING": True}).test_client()
    ids = set()
    for email in ("one@example.com", "two@example.com"):
        r = client.post("/api/v1/auth/register", json={"email": email, "password": "long enough"})
        assert r.status_code == 201, r.get_json()
        assert r.get_json()["role"] == "admin"
        ids.add(r.get_json()["workspace_id"])
    assert len(ids) == 2
    # only the very first user of the hub is a hub administrator
    assert r.get_json()["is_admin"] is False


def test_deactivated_user_is_locked_out_at_once(client, auth):
    m = add_user(client, auth.headers, "gone@example.com")
    assert client.get("/api/v1/flows", headers=m.headers).status_code == 200
    r = client.patch(f"/api/v1/users/{m.user_id}", json={"is_active": False}, headers=auth.headers)
    assert r.status_code == 200 and r.get_json()["is_active"] is False
    assert client.get("/api/v1/flows", headers=m.headers).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": m.tokens["refresh_token"]}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": m.email, "password": "correct horse battery"}
                       ).status_code == 401


def test_the_last_admin_cannot_be_removed(client, auth):
    ws = client.get("/api/v1/auth/me", headers=auth.headers).get_json()["workspace_id"]
    me = client.get("/api/v1/auth/me", headers=auth.headers).get_json()["id"]
    r = client.delete(f"/api/v1/workspaces/{ws}/members/{me}", headers=auth.headers)
    assert r.status_code == 409 and r.get_json()["code"] == "last_admin"
    r = client.patch(f"/api/v1/users/{me}", json={"is_admin": False}, headers=auth.headers)
    assert r.status_code == 409 and r.get_json()["code"] == "last_admin"
