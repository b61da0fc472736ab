"""The first slice of the API through the Flask test client (real SQLite, real queue)."""

from __future__ import annotations

from hub.models import Delivery, Run

FLOW_YAML = b"""
name: hello
nodes:
  - id: get
    connector: http
    config: {url: "http://127.0.0.1:9/"}
"""


def make_flow(client, auth, body=FLOW_YAML, content_type="application/yaml"):
    r = client.post("/api/v1/flows", data=body, content_type=content_type, headers=auth.headers)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def make_hook(client, auth, flow_id, **settings):
    r = client.post(f"/api/v1/flows/{flow_id}/triggers", json={"type": "webhook", **settings}, headers=auth.headers)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["url"].split("localhost", 1)[1]


def test_flow_from_yaml_is_stored_and_listed(client, auth):
    flow = make_flow(client, auth)
    assert flow["name"] == "hello" and flow["version"] == 1
    assert flow["document"]["nodes"][0]["connector"] == "http"
    listed = client.get("/api/v1/flows", headers=auth.headers).get_json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == flow["id"]
    assert client.get(f"/api/v1/flows/{flow['id']}", headers=auth.headers).get_json()["name"] == "hello"


def test_bad_flow_document_lists_every_problem_with_its_path(client, auth):
    doc = {
        "name": "bad",
        "nodes": [
            {"id": "a", "connector": "http", "config": {"url": "http://x", "method": "FETCH"}},
            {"id": "b", "connector": "no-such-connector"},
            {"id": "c", "connector": "http", "config": {"url": "{{ trigger.body.x "}},
        ],
        "edges": [{"from": "a", "to": "c"}, {"from": "c", "to": "a"}, {"from": "a", "to": "zzz"}],
    }
    r = client.post("/api/v1/flows", json=doc, headers=auth.headers)
    assert r.status_code == 422
    body = r.get_json()
    assert body["code"] == "invalid_flow"
    found = {(p["path"], p["code"]) for p in body["errors"]}
    assert ("nodes[0].config.method", "invalid_config") in found
    assert ("nodes[1].connector", "unknown_connector") in found
    assert ("nodes[2].config.url", "template_syntax") in found
    assert ("edges[2].to", "unknown_node") in found
    assert any(code == "cycle" for _, code in found)
    assert client.get("/api/v1/flows", headers=auth.headers).get_json()["total"] == 0


def test_validate_checks_without_saving(client, auth):
    r = client.post("/api/v1/flows/validate", json={"name": "x", "nodes": "nope"}, headers=auth.headers)
    assert r.status_code == 200 and r.get_json()["valid"] is False
    assert r.get_json()["problems"][0]["path"] == "nodes"
    r = client.post("/api/v1/flows/validate", data=FLOW_YAML, content_type="application/yaml", headers=auth.headers)
    assert r.get_json() == {"valid": True, "problems": []}


def test_malformed_flow_body_is_a_clear_400(client, auth):
    r = client.post("/api/v1/flows", data=b"name: [unclosed", content_type="application/yaml", headers=auth.headers)
    assert r.status_code == 400
    assert r.get_json()["code"] == "malformed_body" and "line" in r.get_json()["message"]
    r = client.post("/api/v1/flows", data=b"", content_type="application/json", headers=auth.headers)
    assert r.status_code == 400 and r.get_json()["code"] == "empty_body"


def test_api_needs_a_token(client):
    r = client.get("/api/v1/flows")
    assert r.status_code == 401 and r.get_json()["code"] == "unauthorized"
    r = client.get("/api/v1/flows", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_token"


def test_webhook_commits_delivery_and_run_before_answering_202(client, auth):
    flow = make_flow(client, auth)
    path = make_hook(client, auth, flow["id"])
    r = client.post(path + "?source=test", json={"order": 7}, headers={"X-Custom": "yes"})
    assert r.status_code == 202
    run_id = r.get_json()["run_id"]
    run = Run.get_by_id(run_id)
    assert run.status == "running" and run.trigger_data["body"] == {"order": 7}
    assert run.trigger_data["query"] == {"source": "test"}
    assert run.trigger_data["headers"]["x-custom"] == "yes"
    assert Delivery.get(Delivery.run == run_id).body == b'{"order": 7}'
    detail = client.get(f"/api/v1/runs/{run_id}", headers=auth.headers).get_json()
    assert [(n["id"], n["status"]) for n in detail["nodes"]] == [("get", "ready")]


def test_unknown_webhook_token_is_404(client):
    r = client.post("/hooks/definitely-not-a-token", json={})
    assert r.status_code == 404 and r.get_json()["code"] == "unknown_hook"


def test_malformed_webhook_body_is_400_and_starts_nothing(client, auth):
    path = make_hook(client, auth, make_flow(client, auth)["id"])
    r = client.post(path, data=b'{"order": ', content_type="application/json")
    assert r.status_code == 400 and r.get_json()["code"] == "malformed_body"
    assert Run.select().count() == 0


def test_oversize_webhook_body_is_413(client, auth):
    path = make_hook(client, auth, make_flow(client, auth)["id"], max_body_bytes=100)
    r = client.post(path, data=b"x" * 101, content_type="text/plain")
    assert r.status_code == 413 and r.get_json()["code"] == "payload_too_large"
    assert client.post(path, data=b"x" * 100, content_type="text/plain").status_code == 202


def test_dedupe_header_answers_with_the_original_run(client, auth):
    path = make_hook(client, auth, make_flow(client, auth)["id"], dedupe={"header": "X-Delivery"})
    first = client.post(path, json={}, headers={"X-Delivery": "abc"}).get_json()
    again = client.post(path, json={}, headers={"X-Delivery": "abc"}).get_json()
    assert again == {"run_id": first["run_id"], "duplicate": True, "status": "accepted"}
    assert Run.select().count() == 1


def test_bad_trigger_settings_are_422_naming_the_field(client, auth):
    flow = make_flow(client, auth)
    r = client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "schedule", "cron": "every day"},
                    headers=auth.headers)
    assert r.status_code == 422 and "cron" in r.get_json()["errors"]


def test_manual_run_is_accepted(client, auth):
    flow = make_flow(client, auth)
    r = client.post(f"/api/v1/flows/{flow['id']}/runs", json={"payload": {"a": 1}}, headers=auth.headers)
    assert r.status_code == 202
    assert Run.get_by_id(r.get_json()["id"]).trigger_data["body"] == {"a": 1}
    assert client.post("/api/v1/flows/999/runs", json={}, headers=auth.headers).status_code == 404


def test_openapi_and_offline_docs(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/api/v1/flows", "/api/v1/runs/{run_id}", "/hooks/{token}", "/health", "/ready"):
        assert path in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"/docs-static/swagger-ui-bundle.js" in docs.data
    bundle = client.get("/docs-static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 100_000
    bundle.close()


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").get_json()["checks"] == {"database": "ok", "queue": "ok"}
