"""The run viewer (/ui) in headless Chromium: log in, watch a run go live over SSE, inspect a node."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import api_login, wait_run
from tests.observability.cdp import Browser, find_chromium

REPO = Path(__file__).resolve().parents[2]


def viewer_flow(sink_url: str) -> dict:
    return {
        "name": "order-sync",
        "nodes": [
            {"id": "fetch_order", "connector": "http", "config": {"url": f"{sink_url}/order"}},
            {"id": "enrich", "connector": "transform",
             "config": {"value": {"order": "{{ nodes.fetch_order.output.body }}"}}},
            {"id": "push_crm", "connector": "http",
             "config": {"method": "POST", "url": f"{sink_url}/crm", "json": {"ok": 1}},
             "retry": {"max_attempts": 3, "backoff_seconds": 0.5}},
            {"id": "notify_slack", "connector": "http", "config": {"url": f"{sink_url}/slack"},
             "retry": {"max_attempts": 2, "backoff_seconds": 0.5}},
            {"id": "archive", "connector": "transform", "config": {"value": "done"}},
            {"id": "page_oncall", "connector": "transform", "config": {"value": "paged"}},
        ],
        "edges": [
            {"from": "fetch_order", "to": "enrich"},
            {"from": "enrich", "to": "push_crm"},
            {"from": "enrich", "to": "notify_slack"},
            {"from": "push_crm", "to": "archive"},
            {"from": "notify_slack", "to": "page_oncall", "when": "on_failure"},
        ],
    }


@pytest.fixture
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required in CI (.ci/run installs it): apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def test_run_viewer_shows_a_live_dag_with_retries_and_errors(sqlite_backend, processes, sink, chromium, tmp_path):
    base = processes.serve(sqlite_backend.env)
    headers = api_login(base)
    sink.respond("/order", (200, {"id": 42, "total": "19.90"}, 1.5))
    sink.respond("/crm", (503, {"error": "crm busy"}), (200, {"synced": True}))
    sink.respond("/slack", (500, {"error": "slack down"}))
    flow = requests.post(f"{base}/api/v1/flows", json=viewer_flow(sink.url), headers=headers, timeout=10)
    assert flow.status_code == 201, flow.text

    browser = Browser(chromium, tmp_path / "chromium-profile")
    try:
        browser.call("Page.navigate", url=f"{base}/ui")
        browser.wait_for("!document.querySelector('#login').hidden")
        browser.eval("""(() => { const f = document.querySelector('#login');
            f.email.value = 'ops@example.com'; f.password.value = 'correct horse battery';
            f.requestSubmit(); return true; })()""")
        browser.wait_for("document.querySelector('#flows').textContent.includes('order-sync')")
        assert browser.eval("sessionStorage.getItem('hookhub.token') !== null")

        run_id = requests.post(f"{base}/api/v1/flows/{flow.json()['id']}/runs", json={"payload": {}},
                               headers=headers, timeout=10).json()["id"]
        browser.eval(f"location.hash = 'run={run_id}'")
        # first drawn while the run is still going (fetch_order takes 1.5 s) ...
        browser.wait_for(f"(document.querySelector('#run h3') || {{}}).textContent?.includes('Run #{run_id}')")
        assert "running" in browser.eval("document.querySelector('#run h3').textContent")
        # ... then brought to its end by the event stream alone: no reload, no polling in the page
        api_run = wait_run(base, headers, run_id, timeout=90)
        assert api_run["status"] == "succeeded", api_run  # the failure was handled (on_failure)
        browser.wait_for("document.querySelector('#run h3 .pill').textContent === 'succeeded'", timeout=30)
        states = browser.eval("""Object.fromEntries([...document.querySelectorAll('#run g.node')].map(
            g => [g.dataset.id, g.querySelectorAll('text')[1].textContent]))""")
        assert states == {
            "fetch_order": "succeeded", "enrich": "succeeded",
            "push_crm": "succeeded · 2 attempts", "notify_slack": "failed · 2 attempts",
            "archive": "succeeded", "page_oncall": "succeeded"}, states
        assert browser.eval("document.querySelectorAll('#run path.edge').length") == 5

        # a node's attempts, output and error
        browser.eval("document.querySelector('#run g.node[data-id=\"notify_slack\"]')"
                     ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        detail = browser.wait_for("document.querySelector('#detail').textContent")
        assert "notify_slack" in detail and "slack down" in detail and detail.count("failed") >= 2
        browser.eval("window.scrollTo(0, 0)")
        shot = tmp_path / "run-viewer.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000 and not browser.console, browser.console
        if os.environ.get("HOOKHUB_UPDATE_SCREENSHOTS"):  # refresh the committed copy on purpose only
            target = REPO / "docs" / "screenshots" / "run-viewer.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)
    finally:
        browser.close()


def test_ui_page_is_served_without_auth_and_keeps_the_token_out_of_storage_that_persists(client):
    r = client.get("/ui")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "sessionStorage" in page and "localStorage" not in page
    assert "/api/v1/auth/login" in page and "EventSource" in page
