"""Webhook behaviour through the Flask test client on the embedded default (real SQLite, real queue)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time

from hub.models import Delivery, Run, utcnow
from tests.triggers.helpers import hook_path, make_flow, make_trigger, run_count

SECRET = "whsec-test"


def gh_headers(body: bytes, delivery: str) -> dict:
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery}


def test_presets_dedupe_by_the_providers_delivery_id_and_answer_the_original_run(client, auth):
    flow = make_flow(client, auth)
    gh = hook_path(make_trigger(client, auth, flow["id"], verify={"scheme": "github", "secret": SECRET}))
    body = b'{"action": "opened"}'
    first = client.post(gh, data=body, headers=gh_headers(body, "d-1"), content_type="application/json")
    again = client.post(gh, data=body, headers=gh_headers(body, "d-1"), content_type="application/json")
    other = client.post(gh, data=body, headers=gh_headers(body, "d-2"), content_type="application/json")
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.get_json() == {"run_id": first.get_json()["run_id"], "duplicate": True, "status": "accepted"}
    assert other.get_json()["run_id"] != first.get_json()["run_id"]
    assert run_count() == 2
    assert again.headers["X-Hookhub-Run-Id"] == str(first.get_json()["run_id"])


def test_stripe_dedupes_by_event_id_in_the_body(client, auth):
    flow = make_flow(client, auth)
    path = hook_path(make_trigger(client, auth, flow["id"], verify={"scheme": "stripe", "secret": SECRET}))

    def send(event_id: str, ts: int):
        body = json.dumps({"id": event_id, "type": "charge.succeeded"}).encode()
        sig = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        return client.post(path, data=body, headers={"Stripe-Signature": f"t={ts},v1={sig}"},
                           content_type="application/json")

    a = send("evt_1", int(time.time()))
    b = send("evt_1", int(time.time()) + 1)  # Stripe's retry: same event, new signature time
    assert b.get_json()["duplicate"] is True and b.get_json()["run_id"] == a.get_json()["run_id"]
    assert send("evt_2", int(time.time())).get_json()["duplicate"] is False
    assert run_count() == 2


def test_dedupe_retention_window_lets_an_old_id_start_a_new_run(client, auth):
    flow = make_flow(client, auth)
    trigger = make_trigger(client, auth, flow["id"], dedupe={"json_path": "$.data.id", "retention_seconds": 60})
    path = hook_path(trigger)
    first = client.post(path, json={"data": {"id": 7}}).get_json()["run_id"]
    assert client.post(path, json={"data": {"id": 7}}).get_json()["run_id"] == first
    # Age the first delivery past the window: the same id is a new delivery again.
    Delivery.update(received_at=utcnow() - dt.timedelta(seconds=61)).where(Delivery.run == first).execute()
    later = client.post(path, json={"data": {"id": 7}}).get_json()
    assert later["duplicate"] is False and later["run_id"] != first
    assert run_count() == 2
    # The log keeps all three, and says which one was the repeat.
    log = client.get(f"/api/v1/triggers/{trigger['id']}/deliveries", headers=auth.headers).get_json()
    assert [d["status"] for d in log["items"]] == ["accepted", "duplicate", "accepted"]


def test_dedupe_can_be_turned_off_for_a_preset(client, auth):
    flow = make_flow(client, auth)
    path = hook_path(make_trigger(client, auth, flow["id"], verify={"scheme": "github", "secret": SECRET},
                                  dedupe={"enabled": False}))
    body = b"{}"
    for _ in range(2):
        assert client.post(path, data=body, headers=gh_headers(body, "same"),
                           content_type="application/json").get_json()["duplicate"] is False
    assert run_count() == 2


def test_rate_limit_answers_429_with_retry_after_and_starts_nothing(client, auth):
    flow = make_flow(client, auth)
    path = hook_path(make_trigger(client, auth, flow["id"], rate_limit="3/minute"))
    codes = [client.post(path, json={"i": i}).status_code for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    r = client.post(path, json={})
    assert r.get_json()["code"] == "rate_limited" and 1 <= int(r.headers["Retry-After"]) <= 60
    assert run_count() == 3


def test_bad_rate_limit_is_422(client, auth):
    flow = make_flow(client, auth)
    r = client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "webhook", "rate_limit": "lots"},
                    headers=auth.headers)
    assert r.status_code == 422 and "rate_limit" in r.get_json()["errors"]


def test_sync_mode_answers_200_with_the_output(app, client, auth):
    from tests.triggers.helpers import ECHO_FLOW

    app.extensions["hookhub"].huey.immediate = True  # run nodes in-process: the sync answer has an output
    flow = make_flow(client, auth, ECHO_FLOW)
    path = hook_path(make_trigger(client, auth, flow["id"], response="sync", sync_timeout_seconds=20))
    r = client.post(path, json={"hello": "world"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"got": {"hello": "world"}}
    assert Run.get_by_id(int(r.headers["X-Hookhub-Run-Id"])).status == "succeeded"


def test_sync_mode_answers_502_when_the_flow_fails(app, client, auth):
    app.extensions["hookhub"].huey.immediate = True
    doc = {"name": "fails", "nodes": [{"id": "get", "connector": "http", "retry": {"max_attempts": 1},
                                       "config": {"url": "http://127.0.0.1:9/", "timeout_seconds": 2}}]}
    flow = make_flow(client, auth, doc)
    path = hook_path(make_trigger(client, auth, flow["id"], response="sync", sync_timeout_seconds=30))
    r = client.post(path, json={})
    assert r.status_code == 502, r.get_json()
    assert r.get_json()["code"] == "run_failed" and r.get_json()["run_id"]


def test_sync_mode_answers_202_with_the_run_id_on_timeout(client, auth):
    # No worker runs here: the run cannot finish, so the answer is 202 with its id after the timeout.
    flow = make_flow(client, auth)
    path = hook_path(make_trigger(client, auth, flow["id"], response="sync", sync_timeout_seconds=0.3))
    r = client.post(path, json={})
    assert r.status_code == 202
    assert r.get_json()["status"] == "running" and Run.get_by_id(r.get_json()["run_id"]).status == "running"


def test_delivery_log_lists_refusals_with_redacted_headers(client, auth):
    flow = make_flow(client, auth)
    trigger = make_trigger(client, auth, flow["id"], verify={"scheme": "github", "secret": SECRET},
                           max_body_bytes=64)
    path = hook_path(trigger)
    client.post(path, data=b"{}", headers={"X-Hub-Signature-256": "sha256=00", "X-Session-Token": "sid=abc",
                                           "X-Api-Key": "k"}, content_type="application/json")
    client.post(path, data=b"x" * 100, content_type="text/plain")
    log = client.get(f"/api/v1/triggers/{trigger['id']}/deliveries?status=rejected", headers=auth.headers)
    assert log.status_code == 200
    items = log.get_json()["items"]
    assert [(d["status_code"], d["status"]) for d in items] == [(413, "rejected"), (401, "rejected")]
    assert items[1]["headers"]["x-session-token"] == "***" and items[1]["headers"]["x-api-key"] == "***"
    assert items[1]["error"].startswith("signature_invalid") and items[1]["body"] == "{}"
    assert run_count() == 0
    other = client.get("/api/v1/triggers/999999/deliveries", headers=auth.headers)
    assert other.status_code == 404


def test_rotate_token_keeps_the_old_url_during_the_overlap(client, auth):
    flow = make_flow(client, auth)
    trigger = make_trigger(client, auth, flow["id"])
    old = hook_path(trigger)
    r = client.post(f"/api/v1/triggers/{trigger['id']}/rotate", json={"what": "token", "overlap_seconds": 3600},
                    headers=auth.headers)
    assert r.status_code == 200, r.get_json()
    new = hook_path(r.get_json())
    assert new != old and r.get_json()["previous_url_expires_at"]
    assert client.post(old, json={}).status_code == 202
    assert client.post(new, json={}).status_code == 202
    # Without overlap the old URL stops at once.
    r = client.post(f"/api/v1/triggers/{trigger['id']}/rotate", json={"what": "token", "overlap_seconds": 0},
                    headers=auth.headers)
    assert client.post(new, json={}).status_code == 404
    assert client.post(hook_path(r.get_json()), json={}).status_code == 202
    assert client.post(old, json={}).status_code == 202  # the first rotation's overlap still holds


def test_rotate_secret_accepts_both_during_the_overlap_then_only_the_new(client, auth):
    from hub.models import Trigger

    flow = make_flow(client, auth)
    trigger = make_trigger(client, auth, flow["id"], verify={"scheme": "github", "secret": SECRET},
                           dedupe={"enabled": False})
    path = hook_path(trigger)
    r = client.post(f"/api/v1/triggers/{trigger['id']}/rotate", json={"what": "secret", "overlap_seconds": 600},
                    headers=auth.headers)
    assert r.status_code == 200
    new_secret = r.get_json()["secret"]
    assert len(r.get_json()["config"]["verify"]["previous_secrets_expire_at"]) == 1

    def send(secret):
        sig = "sha256=" + hmac.new(secret.encode(), b"{}", hashlib.sha256).hexdigest()
        return client.post(path, data=b"{}", headers={"X-Hub-Signature-256": sig},
                           content_type="application/json").status_code

    assert send(SECRET) == 202 and send(new_secret) == 202 and send("neither") == 401
    # The overlap ends: only the new secret is accepted.
    t = Trigger.get_by_id(trigger["id"])
    verify = t.config["verify"]
    verify["previous_secrets"][0]["expires_at"] = (utcnow() - dt.timedelta(seconds=1)).isoformat()
    t.config = {**t.config, "verify": verify}
    t.save()
    assert send(SECRET) == 401 and send(new_secret) == 202
    # A provider-generated secret can be given; it is not echoed back.
    r = client.post(f"/api/v1/triggers/{trigger['id']}/rotate",
                    json={"what": "secret", "secret": "from-provider", "overlap_seconds": 0}, headers=auth.headers)
    assert "secret" not in r.get_json() and send("from-provider") == 202 and send(new_secret) == 401


def test_rotate_refuses_what_it_cannot_rotate(client, auth):
    flow = make_flow(client, auth)
    plain = make_trigger(client, auth, flow["id"])
    r = client.post(f"/api/v1/triggers/{plain['id']}/rotate", json={"what": "secret"}, headers=auth.headers)
    assert r.status_code == 422 and r.get_json()["code"] == "no_verification"
    r = client.post(f"/api/v1/triggers/{plain['id']}/rotate", json={"what": "everything"}, headers=auth.headers)
    assert r.status_code == 422 and "what" in json.dumps(r.get_json()["errors"])
    sched = client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "schedule", "cron": "* * * * *"},
                        headers=auth.headers).get_json()
    r = client.post(f"/api/v1/triggers/{sched['id']}/rotate", json={"what": "token"}, headers=auth.headers)
    assert r.status_code == 422 and r.get_json()["code"] == "not_a_webhook"


def test_form_text_and_raw_bodies(client, auth):
    flow = make_flow(client, auth)
    path = hook_path(make_trigger(client, auth, flow["id"]))
    form = client.post(path, data="a=1&b=2&b=3", content_type="application/x-www-form-urlencoded").get_json()
    text = client.post(path, data="hello", content_type="text/plain").get_json()
    raw = client.post(path, data=b"\xff\x00", content_type="application/octet-stream").get_json()
    assert Run.get_by_id(form["run_id"]).trigger_data["body"] == {"a": "1", "b": ["2", "3"]}
    assert Run.get_by_id(text["run_id"]).trigger_data["body"] == "hello"
    assert Delivery.get(Delivery.run == raw["run_id"]).body == b"\xff\x00"
