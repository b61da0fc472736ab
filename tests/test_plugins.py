"""The plugin manager and connector registry (hub.plugins), with real entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub import plugins
from hub.plugins import (
    ConnectorInfo,
    DuplicateConnectorError,
    PluginProblem,
    Registry,
    StartupError,
    get_registry,
    load_registry,
    reset_registry,
)
from sandbox import ConnectorSpec
from tests.plugins import bad_plugins, dup_http, echo_plugin


def fake_distribution(root: Path, name: str, entry_points: dict[str, str]) -> None:
    """An installed-looking distribution (a .dist-info folder) on a sys.path entry."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[hookhub]\n{lines}")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install a fake distribution for one test: ``installed("hookhub-acme", {"acme": "mod"})``."""

    def install(name: str, entry_points: dict[str, str]) -> None:
        fake_distribution(tmp_path / name, name, entry_points)
        monkeypatch.syspath_prepend(str(tmp_path / name))

    return install


# --- discovery -----------------------------------------------------------------------------


def test_builtin_http_comes_from_the_entry_point():
    registry = load_registry()
    assert registry.problems == []
    info = registry.get("http")
    assert isinstance(info, ConnectorInfo)
    assert info.plugin == "hookhub (http)"
    assert info.version == "1.0.0"
    assert info.permissions == {"network": True}
    assert info.sandbox == "subprocess"
    assert info.spec == ConnectorSpec(kind="python", target="connectors.http:Http")
    assert "connectors.http" in registry.modules


def test_no_entry_points_no_builtins():
    assert load_registry(entry_points=False).connectors == {}


def test_http_config_schema_is_json_schema():
    schema = load_registry().get("http").config_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["url"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["method"]["enum"][:2] == ["GET", "POST"]
    assert props["method"]["default"] == "GET"
    assert props["timeout_seconds"]["maximum"] == 300
    assert props["headers"] == {
        "type": "object",
        "description": "Request headers.",
        "additionalProperties": {"type": "string"},
    }
    assert props["auth"]["properties"]["type"]["enum"] == ["bearer", "basic", "header"]
    assert props["auth"]["additionalProperties"] is False


def test_to_dict_is_what_the_api_shows():
    shown = load_registry().get("http").to_dict()
    assert set(shown) == {"name", "version", "description", "config_schema", "sandbox", "permissions", "plugin"}
    assert shown["name"] == "http" and shown["plugin"] == "hookhub (http)"


def test_extra_plugin_for_one_test():
    registry = load_registry([echo_plugin])
    assert {"echo", "http", "wasm-echo"} <= set(registry.connectors)
    echo = registry.get("echo")
    assert echo.plugin == "tests.plugins.echo_plugin"
    assert echo.description == "Return the input."  # falls back to the docstring
    assert echo.spec == ConnectorSpec("python", "tests.plugins.echo_plugin:Echo")
    assert {"connectors.http", "tests.plugins.echo_plugin"} <= set(registry.modules)
    assert registry.modules == sorted(set(registry.modules))


def test_wasm_connector_spec():
    info = load_registry([echo_plugin], entry_points=False).get("wasm-echo")
    assert info.sandbox == "wasm"
    assert info.spec == ConnectorSpec("wasm", "/opt/hookhub/echo.wasm")


def test_registering_one_plugin_twice_is_harmless():
    registry = load_registry([echo_plugin, echo_plugin])
    assert registry.problems == []
    assert registry.exists("echo")


# --- problems, not crashes -----------------------------------------------------------------


def test_plugin_whose_hook_raises_is_a_problem():
    registry = load_registry([bad_plugins.raising, echo_plugin])
    assert registry.exists("http") and registry.exists("echo")
    assert registry.problems == [
        PluginProblem("tests.plugins.raising", "hookhub_connectors() raised RuntimeError: the plugin's own bug")
    ]


def test_each_bad_connector_is_a_problem_and_the_good_one_stays():
    registry = load_registry([bad_plugins.mixed, bad_plugins.not_a_list], entry_points=False)
    assert list(registry.connectors) == ["fine"]
    messages = [p.message for p in registry.problems]
    assert all(p.plugin in ("tests.plugins.mixed", "tests.plugins.not_a_list") for p in registry.problems)
    assert any("Nameless has no valid name" in m for m in messages)
    assert any("invalid version 'one'" in m for m in messages)
    assert any("'Bad Name@1'" in m for m in messages)
    assert any("NotAConnector" in m and "not a subclass" in m for m in messages)
    assert any("'http' is not a subclass" in m for m in messages)
    assert any("must return a list" in m for m in messages)
    assert len(messages) == 6


def test_hookimpl_pluggy_rejects_is_a_problem():
    registry = load_registry([bad_plugins.bad_signature], entry_points=False)
    [problem] = registry.problems
    assert problem.plugin == "tests.plugins.bad_signature"
    assert "unknown_argument" in problem.message


def test_unhashable_plugin_is_a_problem():
    registry = load_registry([{"hookhub_connectors": None}], entry_points=False)
    [problem] = registry.problems
    assert "cannot register dict" in problem.message


def test_entry_point_that_fails_to_import_is_a_problem(installed, caplog):
    installed(
        "hookhub-broken",
        {"broken": "tests.plugins.broken_import", "gone": "hookhub_not_installed.plugin"},
    )
    registry = load_registry()
    assert registry.exists("http")  # the hub still starts
    problems = {p.plugin: p.message for p in registry.problems}
    assert problems == {
        "hookhub-broken (broken)": "could not import tests.plugins.broken_import: "
        "ImportError: hookhub_acme needs acme-sdk>=2, which is not installed",
        "hookhub-broken (gone)": "could not import hookhub_not_installed.plugin: "
        "ModuleNotFoundError: No module named 'hookhub_not_installed'",
    }
    assert "hookhub-broken (broken)" in caplog.text


def test_entry_point_plugin_is_registered(installed):
    installed("hookhub-echo", {"echo": "tests.plugins.echo_plugin"})
    registry = load_registry()
    assert registry.get("echo").plugin == "hookhub-echo (echo)"


# --- duplicates ----------------------------------------------------------------------------


def test_duplicate_name_names_both_plugins():
    with pytest.raises(DuplicateConnectorError) as err:
        load_registry([dup_http])
    assert isinstance(err.value, StartupError)
    message = str(err.value)
    assert '"http"' in message
    assert "hookhub (http)" in message and "tests.plugins.dup_http" in message
    assert "\n" not in message
    assert (err.value.name, err.value.first, err.value.second) == ("http", "hookhub (http)", "tests.plugins.dup_http")


def test_duplicate_from_two_distributions(installed):
    installed("hookhub-acme", {"acme": "tests.plugins.dup_http"})
    with pytest.raises(DuplicateConnectorError, match=r"hookhub \(http\).*hookhub-acme \(acme\)"):
        load_registry()


# --- lookups -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("http", True),
        ("http@1", True),
        ("http@1.0", True),
        ("http@1.0.0", True),
        ("http@2", False),
        ("http@1.1", False),
        ("http@", False),
        ("http@latest", False),
        ("nope", False),
        ("nope@1", False),
    ],
)
def test_get_with_major_pin(name, found):
    registry = load_registry()
    assert (registry.get(name) is not None) is found
    assert registry.exists(name) is found


def test_validate_config():
    registry = load_registry()
    assert registry.validate_config("http", {"url": "https://example.com/"}) == {}
    assert registry.validate_config("http@1", {"url": "https://example.com/"}) == {}
    errors = registry.validate_config("http", {"method": "FETCH", "extra": 1})
    assert set(errors) == {"url", "method", "extra"}
    assert errors["url"] == ["Missing data for required field."]
    assert registry.validate_config("http", ["not", "a", "dict"]) == {
        "_schema": ["config must be an object, not an array"]
    }
    assert registry.validate_config("http", None) == {"_schema": ["config must be an object, not null"]}
    assert registry.validate_config("nope", {}) == {"_schema": ['unknown connector "nope"']}


def test_list_is_sorted():
    assert [i.name for i in load_registry([echo_plugin], entry_points=False).list()] == ["echo", "wasm-echo"]
    names = [i.name for i in load_registry([echo_plugin]).list()]
    assert names == sorted(names) and "http" in names


def test_hand_built_registry():
    info = load_registry().get("http")
    registry = Registry({"http": info})
    assert registry.list() == [info] and registry.problems == [] and registry.modules == ["connectors.http"]


# --- process-wide registry and tracing -----------------------------------------------------


def test_get_registry_is_cached_until_reset():
    reset_registry()
    try:
        first = get_registry()
        assert get_registry() is first
        reset_registry()
        assert get_registry() is not first
    finally:
        reset_registry()


def test_tracing(monkeypatch, capsys):
    monkeypatch.setenv(plugins.TRACE_ENV, "1")
    load_registry([echo_plugin])
    assert "hookhub_connectors" in capsys.readouterr().err


def test_no_tracing_by_default(monkeypatch, capsys):
    monkeypatch.delenv(plugins.TRACE_ENV, raising=False)
    load_registry([echo_plugin])
    assert capsys.readouterr().err == ""


def test_connector_the_sandbox_cannot_import_is_a_problem():
    from types import ModuleType

    from hub.sdk import Connector, hookimpl

    class Local(Connector):
        name = "local"
        version = "1.0.0"

    plugin = ModuleType("tests.plugins.local")
    plugin.hookhub_connectors = hookimpl(lambda: [Local])
    registry = load_registry([plugin], entry_points=False)
    assert not registry.exists("local")
    [problem] = registry.problems
    assert "cannot be imported by the sandbox" in problem.message
