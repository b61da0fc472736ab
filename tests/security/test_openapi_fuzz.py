"""schemathesis against /openapi.json, in-process (WSGI), authenticated: no 5xx, no response that breaks
the documented schema, status code or content type.

Bounded: a few examples per operation, no deadline (the machine may be loaded). Excluded, and why:
- the Server-Sent Events streams (`/api/v1/runs/{run_id}/events`, `/api/v1/events`) answer with an
  endless stream; through WSGI the call would never return. They are read by tests of their own
  (tests/security/test_secret_never_leaks.py reads them over real HTTP).
Nothing else is excluded; rate limits are raised so that fuzzing measures the API, not the limiter
(the limiter has its own tests in test_http_hardening.py).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from hub.app import create_app

STREAMS = r"/events$"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture
def fuzz_app(hub):
    return create_app(hub=hub, test_config={
        "TESTING": True,
        "HOOKHUB_RATE_LIMIT_API": "100000 per minute",
        "HOOKHUB_RATE_LIMIT_LOGIN": "100000 per minute",
        "HOOKHUB_RATE_LIMIT_REGISTER": "100000 per minute",
    })


def fresh_headers(app) -> dict[str, str]:
    """A new access token for the fuzzing admin: fuzzed logouts and password changes do not lock us out."""
    from hub.models import User
    from hub.services.auth import issue_tokens

    user = User.get(User.email == "fuzz@example.com")
    return {"Authorization": f"Bearer {issue_tokens(user, app.extensions['hookhub'].settings)['access_token']}"}


@pytest.fixture
def fuzz_headers(fuzz_app):
    """An admin with one of each object (ids 1), so fuzzed ids sometimes hit something real."""
    client = fuzz_app.test_client()
    creds = {"email": "fuzz@example.com", "password": "correct horse battery"}
    client.post("/api/v1/auth/register", json=creds)
    token = client.post("/api/v1/auth/login", json=creds).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    flow = client.post("/api/v1/flows", headers=headers, json={"name": "f", "nodes": [
        {"id": "t", "connector": "transform", "config": {"value": "{{ trigger.body }}"}}]}).get_json()
    client.post(f"/api/v1/flows/{flow['id']}/triggers", json={"type": "webhook"}, headers=headers)
    client.post(f"/api/v1/flows/{flow['id']}/runs", json={"payload": {}}, headers=headers)
    client.post("/api/v1/secrets", json={"name": "TOKEN", "value": "fuzz-secret"}, headers=headers)
    client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["read"]}, headers=headers)
    return headers


def test_api_matches_its_openapi_document(fuzz_app, fuzz_headers):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app).exclude(path_regex=STREAMS)
    failures, operations, authorized = [], 0, {"n": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        headers = fresh_headers(fuzz_app)

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
               | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def fuzz(case):
            response = case.call_and_validate(headers=headers, checks=CHECKS)  # noqa: B023 (called at once)
            authorized["n"] += response.status_code not in (401, 403)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert operations >= 40, operations
    # the run reached the handlers, not just the authentication in front of them
    assert authorized["n"] > operations, authorized
    assert not failures, "\n\n".join(failures)
