"""A secret used by a real run never appears in an API response, a run event row or a log line."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from pathlib import Path

import requests

from tests.conftest import api_login, wait_run


def _read_stream(url: str, headers: dict, limit_seconds: float = 5.0) -> str:
    """An SSE endpoint: what it sends within a few seconds (the run is over, so that is everything)."""
    chunks, started = [], time.monotonic()
    try:
        # a quiet stream ends the read by its read timeout (it only sends keep-alives from then on)
        with requests.get(url, headers=headers, stream=True, timeout=(5, 3)) as r:
            chunks.append(f"{r.status_code} {dict(r.headers)}")
            for chunk in r.iter_content(chunk_size=None, decode_unicode=True):
                chunks.append(chunk if isinstance(chunk, str) else chunk.decode())
                if "run.finished" in "".join(chunks) or time.monotonic() - started > limit_seconds:
                    break
    except requests.ConnectionError:
        pass
    return "".join(chunks)


def test_secret_value_never_leaves_the_node(sqlite_backend, processes, sink):
    secret = "sk-live-" + uuid.uuid4().hex
    sink.respond("/echo", (200, {"echo": secret, "nested": [f"before {secret} after"]}))
    base = processes.serve(sqlite_backend.env)
    headers = api_login(base)
    responses: list[str] = []

    def call(method: str, path: str, **kw) -> requests.Response:
        r = requests.request(method, base + path, headers=headers, timeout=20, **kw)
        responses.append(f"{method} {path} {r.status_code} {dict(r.headers)} {r.text}")
        return r

    assert call("POST", "/api/v1/secrets", json={"name": "TOKEN", "value": secret}).status_code == 201
    flow = call("POST", "/api/v1/flows", json={
        "name": "uses-secret",
        "output": "{{ nodes.call.output }}",
        "nodes": [
            {"id": "call", "connector": "http", "config": {
                "method": "POST", "url": f"{sink.url}/echo",
                "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
                "json": {"token": "{{ secrets.TOKEN }}"}}},
            # fails, with the secret in the URL it could not reach: errors are redacted too
            {"id": "leaky", "connector": "http", "retry": {"max_attempts": 1}, "continue_on_error": True,
             "config": {"url": "http://127.0.0.1:9/x?token={{ secrets.TOKEN }}", "timeout_seconds": 5}},
        ],
        "edges": [{"from": "call", "to": "leaky"}],
    }).json()
    run_id = call("POST", f"/api/v1/flows/{flow['id']}/runs", json={"payload": {"hello": "world"}}).json()["id"]
    run = wait_run(base, headers, run_id)
    responses.append(str(run))

    # the secret really was used: it reached the sink in the header and the body
    hit = sink.hits("/echo")[0]
    assert hit.headers["Authorization"] == f"Bearer {secret}" and secret.encode() in hit.body
    nodes = {n["id"]: n for n in run["nodes"]}
    assert nodes["call"]["status"] == "succeeded" and nodes["leaky"]["status"] == "failed"
    assert nodes["call"]["output"]["body"]["echo"] == "***"  # redacted, not dropped

    # every GET route of the API, with this run's objects filled in
    spec = call("GET", "/openapi.json").json()
    ids = {"flow_id": flow["id"], "run_id": run_id, "name": "TOKEN", "workspace_id": 1, "user_id": 1,
           "key_id": 1, "trigger_id": 1, "letter_id": 1}
    for path, item in spec["paths"].items():
        if "get" not in item or not path.startswith("/api/"):
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), 1)), path)
        content = item["get"].get("responses", {}).get("200", {}).get("content", {})
        if "text/event-stream" in content:
            responses.append(_read_stream(base + url, headers))
        else:
            call("GET", url)
    call("GET", f"/api/v1/runs?flow_id={flow['id']}")
    call("GET", f"/api/v1/flows/{flow['id']}/export")
    assert len(responses) > 20
    assert any("node.succeeded" in r and "/events" not in r[:40] for r in responses)  # a stream was read

    leaks = [r[:300] for r in responses if secret in r]
    assert not leaks, leaks

    db = sqlite3.connect(Path(sqlite_backend.env["HOOKHUB_DATA_DIR"]) / "hookhub.db")
    rows = db.execute("SELECT type, node_id, data FROM run_event WHERE run_id = ?", (run_id,)).fetchall()
    attempts = db.execute("SELECT output, error FROM attempt WHERE run_id = ?", (run_id,)).fetchall()
    stored = db.execute("SELECT ciphertext FROM secret").fetchall()
    db.close()
    assert len(rows) >= 6 and any(r[0] == "run.finished" for r in rows)
    assert not [r for r in rows if secret in str(r)]
    assert not [a for a in attempts if secret in str(a)]
    assert stored and secret not in stored[0][0]  # encrypted at rest

    processes.stop_all()
    logs = "".join(Path(p.log_path).read_text(errors="replace") for p in processes.procs)
    assert logs.strip(), "the hub wrote no log at all: nothing was checked"
    assert secret not in logs
