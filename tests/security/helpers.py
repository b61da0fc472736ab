"""Small helpers for the security tests: more users, their tokens, their workspaces."""

from __future__ import annotations

from dataclasses import dataclass

PASSWORD = "correct horse battery"


@dataclass
class Member:
    email: str
    user_id: int
    tokens: dict
    workspace_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


def login(client, email: str, password: str = PASSWORD) -> dict:
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def add_user(client, admin_headers: dict, email: str, *, is_admin: bool = False) -> Member:
    """A user added by a hub admin; they get a workspace of their own."""
    r = client.post("/api/v1/users", json={"email": email, "password": PASSWORD, "is_admin": is_admin},
                    headers=admin_headers)
    assert r.status_code == 201, r.get_json()
    tokens = login(client, email)
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).get_json()
    return Member(email, r.get_json()["id"], tokens, me["workspace_id"])


def make_key(client, headers: dict, scopes: list[str], name: str = "k") -> dict:
    r = client.post("/api/v1/api-keys", json={"name": name, "scopes": scopes}, headers=headers)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


FLOW = {"name": "hello", "nodes": [{"id": "get", "connector": "http", "config": {"url": "http://127.0.0.1:9/"}}]}


def make_flow(client, headers: dict, name: str = "hello") -> dict:
    r = client.post("/api/v1/flows", json=FLOW | {"name": name}, headers=headers)
    assert r.status_code == 201, r.get_json()
    return r.get_json()
