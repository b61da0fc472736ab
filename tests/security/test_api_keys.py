"""API keys: shown once, stored hashed, scoped onto roles, capped by the creator's role, revocable."""

from __future__ import annotations

from hub.crypto import sha256_hex
from hub.models import ApiKey
from tests.security.helpers import add_user, make_flow, make_key


def test_key_is_shown_once_stored_hashed_and_works(client, auth):
    created = make_key(client, auth.headers, ["read"], name="ci")
    key = created["key"]
    assert key.startswith(created["prefix"] + "_") and created["scopes"] == ["read"]
    row = ApiKey.get_by_id(created["id"])
    assert row.key_hash == sha256_hex(key) and key not in (row.prefix, row.key_hash)
    listed = client.get("/api/v1/api-keys", headers=auth.headers).get_json()
    assert listed["total"] == 1 and "key" not in listed["items"][0]
    assert listed["items"][0]["last_used_at"] is None

    me = client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert me.status_code == 200 and me.get_json()["role"] == "viewer"
    listed = client.get("/api/v1/api-keys", headers=auth.headers).get_json()
    assert listed["items"][0]["last_used_at"] is not None


def test_scopes_map_onto_roles(client, auth):
    read = make_key(client, auth.headers, ["read"])["key"]
    write = make_key(client, auth.headers, ["write"])["key"]
    admin = make_key(client, auth.headers, ["admin", "read"])["key"]
    flow = make_flow(client, auth.headers)

    assert client.get("/api/v1/flows", headers={"X-API-Key": read}).status_code == 200
    r = client.post("/api/v1/flows/validate", json={"name": "x", "nodes": []}, headers={"X-API-Key": read})
    assert r.status_code == 200  # validating writes nothing: viewers may
    r = client.delete(f"/api/v1/flows/{flow['id']}", headers={"X-API-Key": read})
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"
    r = client.post("/api/v1/secrets", json={"name": "A", "value": "xxxx"}, headers={"X-API-Key": read})
    assert r.status_code == 403

    assert client.post("/api/v1/secrets", json={"name": "A", "value": "xxxx"},
                       headers={"X-API-Key": write}).status_code == 201
    ws = client.get("/api/v1/auth/me", headers=auth.headers).get_json()["workspace_id"]
    r = client.put(f"/api/v1/workspaces/{ws}", json={"name": "renamed"}, headers={"X-API-Key": write})
    assert r.status_code == 403
    r = client.put(f"/api/v1/workspaces/{ws}", json={"name": "renamed"}, headers={"X-API-Key": admin})
    assert r.status_code == 200
    # a key is never a hub administrator, even one its admin creator made with the admin scope
    assert client.get("/api/v1/users", headers={"X-API-Key": admin}).status_code == 403
    # and cannot mint more keys
    r = client.post("/api/v1/api-keys", json={"name": "more", "scopes": ["read"]}, headers={"X-API-Key": admin})
    assert r.status_code == 403 and r.get_json()["code"] == "token_required"


def test_scopes_are_capped_by_the_creators_role(client, auth):
    ws = client.get("/api/v1/auth/me", headers=auth.headers).get_json()["workspace_id"]
    viewer = add_user(client, auth.headers, "viewer@example.com")
    assert client.post(f"/api/v1/workspaces/{ws}/members", json={"user_id": viewer.user_id, "role": "viewer"},
                       headers=auth.headers).status_code == 201
    headers = viewer.headers | {"X-Workspace-Id": str(ws)}
    r = client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["write"]}, headers=headers)
    assert r.status_code == 403 and r.get_json()["code"] == "scope_exceeds_role"
    key = make_key(client, headers, ["read"])["key"]
    assert client.get("/api/v1/flows", headers={"X-API-Key": key}).status_code == 200

    # an editor's write key loses its power the moment the editor is demoted
    client.put(f"/api/v1/workspaces/{ws}/members/{viewer.user_id}", json={"role": "editor"}, headers=auth.headers)
    write = make_key(client, headers, ["write"])["key"]
    assert client.post("/api/v1/secrets", json={"name": "B", "value": "xxxx"},
                       headers={"X-API-Key": write}).status_code == 201
    client.put(f"/api/v1/workspaces/{ws}/members/{viewer.user_id}", json={"role": "viewer"}, headers=auth.headers)
    assert client.post("/api/v1/secrets", json={"name": "C", "value": "xxxx"},
                       headers={"X-API-Key": write}).status_code == 403
    # and dies when they leave the workspace
    assert client.delete(f"/api/v1/workspaces/{ws}/members/{viewer.user_id}",
                         headers=auth.headers).status_code == 204
    assert client.get("/api/v1/flows", headers={"X-API-Key": key}).status_code == 401


def test_revoked_and_unknown_keys_are_refused(client, auth):
    created = make_key(client, auth.headers, ["write"])
    headers = {"X-API-Key": created["key"]}
    assert client.get("/api/v1/flows", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/api-keys/{created['id']}", headers=auth.headers).status_code == 204
    r = client.get("/api/v1/flows", headers=headers)
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_api_key"
    assert client.get("/api/v1/api-keys", headers=auth.headers).get_json()["total"] == 0
    revoked = client.get("/api/v1/api-keys?include_revoked=true", headers=auth.headers).get_json()["items"]
    assert revoked[0]["revoked_at"] is not None
    for bogus in ("nope", "hh_00000000_" + "x" * 43, created["key"][:-1]):
        assert client.get("/api/v1/flows", headers={"X-API-Key": bogus}).status_code == 401
    assert client.delete("/api/v1/api-keys/999", headers=auth.headers).status_code == 404


def test_bad_key_requests_are_422_naming_the_field(client, auth):
    r = client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["root"]}, headers=auth.headers)
    assert r.status_code == 422 and "scopes.0" in r.get_json()["errors"]
    r = client.post("/api/v1/api-keys", json={"scopes": []}, headers=auth.headers)
    assert r.status_code == 422 and {"name", "scopes"} <= set(r.get_json()["errors"])
