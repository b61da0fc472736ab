"""Third-party connector packages: pip-installed, discovered, listed with their schema, run in a flow.

The example packages are installed with pip into a temporary ``--target`` directory put on
``sys.path`` (``importlib.metadata`` finds their ``.dist-info`` there), never into the shared venv,
so other test runs on this machine never see them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub import plugins
from hub.db import write_transaction
from hub.models import Flow, FlowVersion, NodeRun, Run, RunEvent, Workspace
from hub.runtime import create_run, execute_node

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def pip_install_target(sources: list[Path], target: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--target", str(target), *map(str, sources)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def on_path(tmp_path) -> Iterator[Path]:
    """A directory on sys.path for the test; the registry is rebuilt before and after."""
    target = tmp_path / "site"
    target.mkdir()
    sys.path.insert(0, str(target))
    plugins.reset_registry()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.split(".")[0] in ("hookhub_acme", "hookhub_wasm_echo",
                                                                    "hookhub_acme_ticket")]:
            del sys.modules[name]
        plugins.reset_registry()


@pytest.fixture
def examples_installed(on_path, tmp_path) -> Path:
    # build from copies, so the source tree gets no build/ or egg-info droppings
    sources = [shutil.copytree(EXAMPLES / name, tmp_path / "src" / name, symlinks=False)
               for name in ("hookhub-acme", "wasm-echo")]
    pip_install_target(sources, on_path)
    return on_path


@pytest.fixture
def examples_hub(examples_installed, sqlite_backend):
    from tests.conftest import _make_hub

    yield from _make_hub(sqlite_backend)  # Hub(settings) takes the rebuilt registry


def test_installed_examples_are_discovered_listed_and_run_in_a_flow(examples_hub):
    registry = examples_hub.registry
    acme, echo = registry.get("acme-score@1"), registry.get("wasm-echo")
    assert acme is not None and echo is not None, registry.problems
    assert acme.plugin == "hookhub-acme (acme)" and acme.sandbox == "subprocess"
    assert echo.plugin == "hookhub-wasm-echo (wasm_echo)" and echo.sandbox == "wasm"
    assert echo.spec.kind == "wasm" and Path(echo.spec.target).is_file()
    assert str(examples_hub.settings.data_dir) not in echo.spec.target

    # listed with its JSON schema through the API
    from hub.app import create_app
    from tests.conftest import Auth

    client = create_app(hub=examples_hub, test_config={"TESTING": True}).test_client()
    headers = Auth(client).register_and_login()
    listing = client.get("/api/v1/connectors", headers=headers)
    assert listing.status_code == 200, listing.get_json()
    items = {i["name"]: i for i in listing.get_json()["items"]}
    schema = items["acme-score"]["config_schema"]
    assert schema["required"] == ["rules"]
    assert schema["properties"]["rules"]["items"]["properties"]["points"]["type"] == "integer"
    assert items["acme-score"]["version"] == "1.0.0" and items["acme-score"]["plugin"] == "hookhub-acme (acme)"
    assert items["wasm-echo"]["sandbox"] == "wasm"
    assert items["wasm-echo"]["config_schema"]["properties"]["fail"]["type"] == "boolean"

    # a flow document naming them validates through the API
    doc = {
        "name": "lead",
        "nodes": [
            {"id": "score", "connector": "acme-score@1",
             "config": {"lead": "{{ trigger.body }}", "threshold": 30,
                        "rules": [{"field": "country", "equals": "DE", "points": 10},
                                  {"field": "employees", "min": 50, "points": 25}]}},
            {"id": "echo", "connector": "wasm-echo", "config": {}},
        ],
        "edges": [{"from": "score", "to": "echo"}],
    }
    valid = client.post("/api/v1/flows/validate", json=doc, headers=headers)
    assert valid.status_code == 200 and valid.get_json()["valid"], valid.get_json()
    bad = {**doc, "nodes": [{**doc["nodes"][0], "config": {"rules": [{"field": "x"}]}}, doc["nodes"][1]]}
    refused = client.post("/api/v1/flows/validate", json=bad, headers=headers).get_json()
    assert not refused["valid"]
    assert any("points" in p["path"] for p in refused["problems"]), refused

    # run, sandboxed: acme-score in the subprocess sandbox, wasm-echo in the WASM sandbox
    with write_transaction():
        ws = Workspace.create(name="w")
        flow = Flow.create(workspace=ws, name="lead")
        fv = FlowVersion.create(flow=flow, version=1, document=doc)
        run, _ = create_run(fv, {"body": {"country": "DE", "employees": 120}}, workspace_id=ws.id)
    execute_node(run.id, "score", examples_hub.runtime)
    execute_node(run.id, "echo", examples_hub.runtime)
    nodes = {n.node_id: n for n in NodeRun.select().where(NodeRun.run == run.id)}
    assert nodes["score"].status == "succeeded", nodes["score"].error
    assert nodes["score"].output == {"score": 35, "qualified": True, "matched": ["country", "employees"]}
    assert nodes["echo"].status == "succeeded", nodes["echo"].error
    assert nodes["echo"].output == {"score": nodes["score"].output}  # its input: outputs by predecessor
    assert Run.get_by_id(run.id).status == "succeeded"
    logs = [e.data["line"] for e in RunEvent.select().where(RunEvent.run == run.id, RunEvent.type == "node.log")]
    assert any("lead scored 35" in line for line in logs)


def test_scaffolded_package_passes_its_own_tests_and_installs(on_path, tmp_path):
    from hub.cli import main

    result = CliRunner().invoke(main, ["connectors", "new", "acme-ticket", "--dir", str(tmp_path),
                                       "--description", "Open a ticket in Acme"])
    assert result.exit_code == 0, result.output
    package = tmp_path / "hookhub-acme-ticket"
    assert {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()} == {
        "README.md", "setup.cfg", "pyproject.toml", "hookhub_acme_ticket/__init__.py",
        "hookhub_acme_ticket/plugin.py", "tests/test_plugin.py"}
    assert "acme_ticket = hookhub_acme_ticket.plugin" in (package / "setup.cfg").read_text()

    # its generated tests pass, through the real sandbox
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
                           capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "4 passed" in tests.stdout

    # and once installed the hub finds it
    pip_install_target([package], on_path)
    info = plugins.get_registry().get("acme-ticket@0")
    assert info is not None and info.description == "Open a ticket in Acme"
    assert info.plugin == "hookhub-acme-ticket (acme_ticket)"

    again = CliRunner().invoke(main, ["connectors", "new", "acme-ticket", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "exists already" in again.output
    bad = CliRunner().invoke(main, ["connectors", "new", "Acme Ticket", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "not a connector name" in bad.output
