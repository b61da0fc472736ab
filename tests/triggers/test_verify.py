"""Signature presets: payloads signed exactly as each provider documents it, through the real endpoint.

A right signature is accepted (202, one run); a wrong, expired or missing one gets 401 and starts nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks import Webhook

from hub.models import Delivery, Run, Trigger
from hub.services.verify import VerifyError, verify_request
from tests.triggers.helpers import hook_path, make_flow, make_trigger, run_count

SECRET = "It's a Secret to Everybody"
BODY = json.dumps({"id": "evt_1", "event_id": "Ev01", "action": "opened", "n": 1}).encode()


def hexmac(key: str | bytes, msg: bytes, algo=hashlib.sha256) -> str:
    return hmac.new(key.encode() if isinstance(key, str) else key, msg, algo).hexdigest()


# Each signer returns the headers the provider would send for BODY at Unix time `ts`.
def github(body, ts, secret=SECRET):
    return {"X-Hub-Signature-256": "sha256=" + hexmac(secret, body), "X-GitHub-Delivery": "d-1",
            "X-GitHub-Event": "issues"}


def stripe(body, ts, secret=SECRET):
    # https://docs.stripe.com/webhooks#verify-manually: signed_payload = "{t}.{body}", HMAC-SHA256 hex
    return {"Stripe-Signature": f"t={ts},v1={hexmac(secret, f'{ts}.'.encode() + body)},v0=deadbeef"}


def slack(body, ts, secret=SECRET):
    # https://api.slack.com/authentication/verifying-requests-from-slack: "v0:{ts}:{body}"
    return {"X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": "v0=" + hexmac(secret, f"v0:{ts}:".encode() + body)}


WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-0123").decode()


def standard(body, ts, secret=WHSEC):
    sig = Webhook(secret).sign("msg_1", dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None), body.decode())
    return {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
            "webhook-signature": "v1,bm90IHRoaXMgb25l " + sig}  # several signatures, space separated


def generic_hmac(body, ts, secret=SECRET):
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha512).digest()
    return {"X-Sig": "sha512=" + base64.b64encode(digest).decode(), "X-Ts": str(ts)}


def header(body, ts, secret=SECRET):
    return {"X-Token-Check": secret}


def basic(body, ts, secret=SECRET):
    return {"Authorization": "Basic " + base64.b64encode(f"hooks:{secret}".encode()).decode()}


PRESETS = {
    # name: (verify settings, signer, signs the body?, carries a timestamp?)
    "github": ({"scheme": "github"}, github, True, False),
    "stripe": ({"scheme": "stripe"}, stripe, True, True),
    "slack": ({"scheme": "slack"}, slack, True, True),
    "standard-webhooks": ({"scheme": "standard-webhooks", "secret": WHSEC}, standard, True, True),
    "hmac": ({"scheme": "hmac", "header": "X-Sig", "algorithm": "sha512", "encoding": "base64",
              "prefix": "sha512=", "timestamp_header": "X-Ts"}, generic_hmac, True, True),
    "header": ({"scheme": "header", "header": "X-Token-Check"}, header, False, False),
    "basic": ({"scheme": "basic", "username": "hooks"}, basic, False, False),
}


def _hook(client, auth, verify):
    flow = make_flow(client, auth)
    trigger = make_trigger(client, auth, flow["id"], verify={"secret": SECRET, **verify})
    return trigger, hook_path(trigger)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_accepts_a_real_signature_and_refuses_wrong_expired_missing(client, auth, name):
    verify, sign, signs_body, timestamped = PRESETS[name]
    trigger, path = _hook(client, auth, verify)
    secret = verify.get("secret", SECRET)
    now = int(time.time())
    post = lambda headers, body=BODY: client.post(path, data=body, headers=headers,  # noqa: E731
                                                  content_type="application/json")

    wrong = post(sign(BODY, now, secret="not the secret"))
    assert wrong.status_code == 401 and wrong.get_json()["code"] == "signature_invalid", wrong.get_json()
    if signs_body:
        tampered = post(sign(BODY, now, secret), body=BODY.replace(b'"n": 1', b'"n": 2'))
        assert tampered.status_code == 401 and tampered.get_json()["code"] == "signature_invalid"
    missing = post({})
    assert missing.status_code == 401 and missing.get_json()["code"] == "signature_missing"
    if timestamped:
        old = now - 301
        expired = post(sign(BODY, old, secret))
        assert expired.status_code == 401 and expired.get_json()["code"] == "signature_expired", expired.get_json()
    assert run_count() == 0, "a refused delivery started a run"

    ok = post(sign(BODY, now, secret))
    assert ok.status_code == 202, ok.get_json()
    run = Run.get_by_id(ok.get_json()["run_id"])
    assert run.trigger_data["body"]["action"] == "opened"
    assert run_count() == 1
    rejected = Delivery.select().where((Delivery.trigger == trigger["id"]) & (Delivery.status == "rejected")).count()
    assert rejected == 2 + signs_body + timestamped


def test_secrets_are_encrypted_at_rest_and_never_returned(client, auth):
    trigger, _ = _hook(client, auth, {"scheme": "github"})
    stored = Trigger.get_by_id(trigger["id"]).config["verify"]
    assert "secret" not in stored and SECRET not in json.dumps(stored)
    assert stored["secret_ciphertext"]
    shown = client.get(f"/api/v1/triggers/{trigger['id']}", headers=auth.headers).get_json()
    assert SECRET not in json.dumps(shown) and "secret_ciphertext" not in json.dumps(shown)
    assert shown["config"]["verify"] == {"scheme": "github", "secret_set": True, "previous_secrets_expire_at": []}
    # Changing other verify options keeps the secret.
    r = client.put(f"/api/v1/triggers/{trigger['id']}", json={"verify": {"scheme": "github", "tolerance_seconds": 60}},
                   headers=auth.headers)
    assert r.status_code == 200, r.get_json()
    assert client.post(hook_path(trigger), data=BODY, headers=github(BODY, 0),
                       content_type="application/json").status_code == 202


def test_secret_by_reference_to_a_workspace_secret(client, auth, hub):
    from hub.models import Secret, Workspace

    ws = Workspace.select().first()
    Secret.create(workspace=ws.id, name="GH_HOOK", ciphertext=hub.secret_box.encrypt("from-the-vault"))
    flow = make_flow(client, auth)
    trigger = make_trigger(client, auth, flow["id"], verify={"scheme": "github", "secret_ref": "GH_HOOK"})
    path = hook_path(trigger)
    assert client.post(path, data=BODY, headers=github(BODY, 0), content_type="application/json").status_code == 401
    r = client.post(path, data=BODY, headers=github(BODY, 0, "from-the-vault"), content_type="application/json")
    assert r.status_code == 202


def test_a_verification_without_a_secret_is_refused(client, auth):
    flow = make_flow(client, auth)
    r = client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "webhook", "verify": {"scheme": "stripe"}},
                    headers=auth.headers)
    assert r.status_code == 422 and "secret" in r.get_json()["errors"]["verify"]
    r = client.post(f"/api/v1/flows/{flow['id']}/triggers",
                    json={"type": "webhook", "verify": {"scheme": "basic", "secret": "x"}}, headers=auth.headers)
    assert r.status_code == 422 and "username" in r.get_json()["errors"]["verify"]


def test_shared_secret_header_is_redacted_in_the_run_and_the_log(client, auth):
    trigger, path = _hook(client, auth, {"scheme": "header", "header": "X-Token-Check"})
    r = client.post(path, json={"a": 1}, headers={"X-Token-Check": SECRET, "X-Other": "visible"})
    assert r.status_code == 202
    run = Run.get_by_id(r.get_json()["run_id"])
    assert run.trigger_data["headers"]["x-token-check"] == "***"
    assert run.trigger_data["headers"]["x-other"] == "visible"
    log = client.get(f"/api/v1/triggers/{trigger['id']}/deliveries", headers=auth.headers).get_json()
    assert SECRET not in json.dumps(log)


@pytest.mark.parametrize("name", ["github", "stripe", "slack", "standard-webhooks"])
def test_verify_request_is_pure_and_takes_several_secrets(name):
    verify, sign, _, _ = PRESETS[name]
    secret = verify.get("secret", SECRET)
    now = 1_700_000_000
    headers = {k.lower(): v for k, v in sign(BODY, now, secret).items()}
    verify_request(verify, headers, BODY, ["older", secret], now=now)
    with pytest.raises(VerifyError):
        verify_request(verify, headers, BODY, ["older", "other"], now=now)
