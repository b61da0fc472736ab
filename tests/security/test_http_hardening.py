"""Brute-force throttling, API rate limits, request ids, security headers and CORS."""

from __future__ import annotations

import logging

from hub.app import create_app


def test_brute_force_login_is_throttled(client, auth):
    creds = {"email": auth.email, "password": "wrong password"}
    codes = [client.post("/api/v1/auth/login", json=creds).status_code for _ in range(10)]
    assert codes == [401] * 10
    r = client.post("/api/v1/auth/login", json=creds)
    assert r.status_code == 429 and r.get_json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) > 0
    # even the right password waits now: guessing cannot continue
    r = client.post("/api/v1/auth/login", json={"email": auth.email, "password": auth.password})
    assert r.status_code == 429
    # another account from the same address is not locked out by someone hammering this one
    r = client.post("/api/v1/auth/login", json={"email": "other@example.com", "password": "wrong password"})
    assert r.status_code == 401


def test_successful_logins_are_not_counted(client, auth):
    for _ in range(15):
        assert client.post("/api/v1/auth/login", json={"email": auth.email, "password": auth.password}
                           ).status_code == 200


def test_api_rate_limit_applies_to_the_api_but_not_to_webhooks_or_health(hub):
    app = create_app(hub=hub, test_config={"TESTING": True, "HOOKHUB_RATE_LIMIT_API": "5 per minute",
                                           "HOOKHUB_RATE_LIMIT_REGISTER": "100 per minute"})
    client = app.test_client()
    client.post("/api/v1/auth/register", json={"email": "a@example.com", "password": "long enough"})
    token = client.post("/api/v1/auth/login", json={"email": "a@example.com", "password": "long enough"}
                        ).get_json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    flow = client.post("/api/v1/flows", headers=h, json={"name": "f", "nodes": [
        {"id": "t", "connector": "transform", "config": {"value": "{{ trigger.body }}"}}]}).get_json()
    url = client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "webhook"}, headers=h
                      ).get_json()["url"].split("localhost", 1)[1]
    statuses = [client.get("/api/v1/flows", headers=h).status_code for _ in range(6)]
    assert 429 in statuses and statuses[0] == 200
    assert client.get("/health").status_code == 200
    for _ in range(8):  # the webhook endpoint has its own per-trigger limit, not the API's
        assert client.post(url, json={"n": 1}).status_code == 202


def test_request_id_is_kept_or_made_and_logged(client, auth, caplog):
    with caplog.at_level(logging.INFO, logger="hookhub.access"):
        r = client.get("/api/v1/flows", headers=auth.headers | {"X-Request-Id": "abc-123"})
        assert r.headers["X-Request-Id"] == "abc-123"
        generated = client.get("/api/v1/flows", headers=auth.headers | {"X-Request-Id": "bad id\u00e9!"})
    assert generated.headers["X-Request-Id"] not in ("", "bad id\u00e9!")
    assert len(generated.headers["X-Request-Id"]) == 32
    ids = {getattr(rec, "request_id", None) for rec in caplog.records if rec.name == "hookhub.access"}
    assert {"abc-123", generated.headers["X-Request-Id"]} <= ids
    # errors carry one too
    assert client.get("/api/v1/flows/999", headers=auth.headers).headers["X-Request-Id"]


def test_security_headers(client, auth):
    r = client.get("/api/v1/flows", headers=auth.headers)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Origin" not in r.headers  # no CORS unless configured
    docs = client.get("/docs")
    assert docs.status_code == 200 and "script-src 'self'" in docs.headers["Content-Security-Policy"]


def test_cors_only_for_configured_origins(hub):
    app = create_app(hub=hub, test_config={"TESTING": True,
                                           "HOOKHUB_CORS_ORIGINS": "https://app.example.com"})
    client = app.test_client()
    pre = client.options("/api/v1/flows", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, X-API-Key"})
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "x-api-key" in pre.headers["Access-Control-Allow-Headers"].lower()
    evil = client.get("/api/v1/flows", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in evil.headers


def test_bad_web_settings_fail_with_one_line(hub):
    import pytest

    from hub.config import ConfigError

    with pytest.raises(ConfigError, match="HOOKHUB_CORS_ORIGINS"):
        create_app(hub=hub, test_config={"HOOKHUB_CORS_ORIGINS": "not an origin"})
    with pytest.raises(ConfigError, match="HOOKHUB_RATE_LIMIT_LOGIN"):
        create_app(hub=hub, test_config={"HOOKHUB_RATE_LIMIT_LOGIN": "lots"})
