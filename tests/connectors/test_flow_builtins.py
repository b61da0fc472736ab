"""branch, delay and log: run by the runtime in the subprocess sandbox, wired with edge `when`s."""

from __future__ import annotations

import time

import pytest

from connectors.branch import Branch
from hub.db import write_transaction
from hub.models import Flow, FlowVersion, NodeRun, Run, RunEvent, Workspace
from hub.runtime import create_run, execute_node
from hub.sdk import ConnectorError
from hub.testing import ConfigInvalid, run_connector, run_inline

ROUTED = {
    "name": "route",
    "nodes": [
        {"id": "route", "connector": "branch",
         "config": {"branches": [{"name": "big", "when": "{{ trigger.body.amount > 100 }}"},
                                 {"name": "eu", "when": "{{ trigger.body.country in ['DE', 'FR'] }}"}],
                    "default": "small"}},
        {"id": "alert", "connector": "log",
         "config": {"message": "big order {{ trigger.body.id }}", "level": "warning",
                    "data": {"amount": "{{ trigger.body.amount }}"}}},
        {"id": "file", "connector": "log", "config": {"message": "small order {{ trigger.body.id }}"}},
        {"id": "pause", "connector": "delay", "config": {"seconds": 0.2}},
    ],
    "edges": [
        {"from": "route", "to": "alert", "when": "{{ nodes.route.output.branch == 'big' }}"},
        {"from": "route", "to": "file", "when": "{{ nodes.route.output.branch == 'small' }}"},
        {"from": "alert", "to": "pause"},
    ],
}


def run_routed(hub, body: dict) -> Run:
    with write_transaction():
        ws = Workspace.create(name="w")
        flow = Flow.create(workspace=ws, name="route")
        fv = FlowVersion.create(flow=flow, version=1, document=ROUTED)
        run, _ = create_run(fv, {"body": body}, workspace_id=ws.id)
    for node_id in ("route", "alert", "file", "pause"):
        execute_node(run.id, node_id, hub.runtime)
    return Run.get_by_id(run.id)


def statuses(run: Run) -> dict[str, NodeRun]:
    return {n.node_id: n for n in NodeRun.select().where(NodeRun.run == run.id)}


def test_branch_routes_log_writes_events_delay_waits(hub):
    started = time.monotonic()
    run = run_routed(hub, {"id": 7, "amount": 250, "country": "DE"})
    nodes = statuses(run)
    assert nodes["route"].output == {"branch": "big", "matched": ["big", "eu"]}
    assert (nodes["alert"].status, nodes["file"].status, nodes["pause"].status) == ("succeeded", "skipped",
                                                                                     "succeeded")
    assert nodes["alert"].output == {"message": "big order 7", "level": "warning", "data": {"amount": 250}}
    assert nodes["pause"].output["waited_seconds"] == 0.2
    assert time.monotonic() - started >= 0.2
    lines = [e.data["line"] for e in RunEvent.select().where(RunEvent.run == run.id, RunEvent.type == "node.log")]
    assert any("big order 7" in line and '{"amount": 250}' in line and "WARNING" in line for line in lines), lines
    assert run.status == "succeeded"


def test_default_branch(hub):
    nodes = statuses(run_routed(hub, {"id": 8, "amount": 5, "country": "US"}))
    assert nodes["route"].output == {"branch": "small", "matched": []}
    assert (nodes["alert"].status, nodes["file"].status, nodes["pause"].status) == ("skipped", "succeeded", "skipped")
    assert nodes["file"].output["message"] == "small order 8"


def test_a_condition_that_is_not_one_expression_is_an_error():
    with pytest.raises(ConnectorError, match="write the whole condition inside one"):
        run_inline(Branch, {"branches": [{"name": "a", "when": "5 > 3"}]})
    assert run_inline(Branch, {"branches": [{"name": "a", "when": "TRUE"}, {"name": "b", "when": None}]}) == {
        "branch": "a", "matched": ["a"]}
    with pytest.raises(ConfigInvalid, match="unique"):
        run_inline(Branch, {"branches": [{"name": "a", "when": True}, {"name": "a", "when": False}]})


def test_delay_is_bounded_by_the_timeout():
    result = run_connector("delay", {"seconds": 5}, timeout_seconds=1)
    assert not result.ok and result.error_kind == "timeout", result


def test_every_builtin_is_listed_with_its_schema(client, auth):
    items = {i["name"]: i for i in client.get("/api/v1/connectors", headers=auth.headers).get_json()["items"]}
    for name in ("http", "email", "llm", "csv", "code", "branch", "delay", "log", "transform"):
        assert items[name]["plugin"] == f"hookhub ({name})", items[name]
        assert items[name]["config_schema"]["type"] == "object"
    assert items["code"]["sandbox"] == "wasm" and items["code"]["config_schema"]["required"] == ["code"]
    assert items["email"]["permissions"] == {"network": True} and items["csv"]["permissions"] == {"network": False}
    assert items["email"]["config_schema"]["properties"]["to"]["oneOf"][1]["type"] == "array"
    assert items["llm"]["config_schema"]["properties"]["provider"]["enum"] == ["openai", "anthropic"]
