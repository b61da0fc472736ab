"""Access tokens expire, refresh tokens rotate, a reused refresh token ends its session, logout revokes."""

from __future__ import annotations

import dataclasses
import time

import jwt

from tests.security.helpers import login


def _me(client, access):
    return client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access}"})


def test_access_token_expires_and_refresh_gives_a_new_one(hub, client, auth):
    hub.settings = dataclasses.replace(hub.settings, access_token_ttl_seconds=1)
    tokens = login(client, auth.email, auth.password)
    assert tokens["expires_in"] == 1 and _me(client, tokens["access_token"]).status_code == 200
    deadline = time.monotonic() + 30
    while (r := _me(client, tokens["access_token"])).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 401 and r.get_json()["code"] == "token_expired"
    fresh = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).get_json()
    assert _me(client, fresh["access_token"]).status_code == 200


def test_refresh_rotates_and_reuse_revokes_the_whole_family(client, auth):
    first = auth.tokens
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).get_json()
    assert second["refresh_token"] != first["refresh_token"]
    third = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).get_json()

    # someone replays the stolen first token: refused, and every token of that session dies with it
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and r.get_json()["code"] == "refresh_token_reused"
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]})
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_refresh_token"
    # another session (another login) is untouched
    other = login(client, auth.email, auth.password)
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200


def test_logout_makes_the_access_token_and_its_session_unusable(client, auth):
    access, refresh = auth.tokens["access_token"], auth.tokens["refresh_token"]
    other = login(client, auth.email, auth.password)
    assert _me(client, access).status_code == 200
    r = client.post("/api/v1/auth/logout", json={"refresh_token": refresh},
                    headers={"Authorization": f"Bearer {access}"})
    assert r.status_code == 204
    r = _me(client, access)
    assert r.status_code == 401 and r.get_json()["code"] == "token_revoked"
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    # the other session still works; logging it out without a refresh token ends every session
    assert _me(client, other["access_token"]).status_code == 200
    newer = login(client, auth.email, auth.password)
    assert client.post("/api/v1/auth/logout", json={},
                       headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 204
    assert _me(client, other["access_token"]).status_code == 401
    for t in (other, newer):
        assert client.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}).status_code == 401


def test_forged_and_malformed_tokens_are_401(hub, client, auth):
    claims = jwt.decode(auth.tokens["access_token"], options={"verify_signature": False})
    forged = [
        jwt.encode(claims, "x" * 40, algorithm="HS256"),                      # wrong key
        jwt.encode(claims | {"typ": "refresh"}, hub.settings.secret_key, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims.items() if k != "jti"}, hub.settings.secret_key, algorithm="HS256"),
        jwt.encode(claims | {"sub": "abc"}, hub.settings.secret_key, algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        "not.a.token", "",
    ]
    for token in forged:
        r = client.get("/api/v1/flows", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (token, r.get_json())
        assert r.mimetype == "application/problem+json"
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": "nope"}).status_code == 401


def test_login_is_refused_without_revealing_which_part_was_wrong(client, auth):
    wrong_password = client.post("/api/v1/auth/login", json={"email": auth.email, "password": "nope nope"})
    no_user = client.post("/api/v1/auth/login", json={"email": "ghost@example.com", "password": "nope nope"})
    assert wrong_password.status_code == no_user.status_code == 401
    assert wrong_password.get_json() == no_user.get_json()
