"""The plugin manager and the connector registry.

One :class:`pluggy.PluginManager` (project name ``hookhub``) per process. Plugins are found through
the ``hookhub`` entry-point group — the built-in connectors too (``setup.cfg`` declares
``http = connectors.http``), so the core exercises exactly the path third parties use.

Start-up is forgiving about *broken* plugins and strict about *conflicting* ones:

- a plugin that fails to import, fails pluggy's validation, raises from its hook or returns
  something that is not a proper :class:`hub.sdk.Connector` subclass is recorded as a
  :class:`PluginProblem` (and logged); the hub starts without it;
- two connectors with one name stop start-up with :class:`DuplicateConnectorError`, naming both
  plugins.

Set ``HOOKHUB_TRACE_PLUGINS=1`` to have every hook call traced on stderr.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import marshmallow
import pluggy
from apispec import APISpec
from apispec.ext.marshmallow import OpenAPIConverter

from hub import hookspecs
from hub.sdk import Connector
from sandbox import ConnectorSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConnectorInfo",
    "DuplicateConnectorError",
    "PluginProblem",
    "Registry",
    "StartupError",
    "get_registry",
    "load_registry",
    "reset_registry",
]

ENTRY_POINT_GROUP = "hookhub"
TRACE_ENV = "HOOKHUB_TRACE_PLUGINS"
SANDBOXES = ("subprocess", "wasm")

log = logging.getLogger("hookhub.plugins")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# semver.org, without the leading "v"
_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_PIN_RE = re.compile(r"^\d+(?:\.\d+){0,2}$")


class StartupError(Exception):
    """The hub cannot start with the installed plugins; the message is one clear line."""


class DuplicateConnectorError(StartupError):
    """Two plugins declare a connector with the same name."""

    def __init__(self, name: str, first: str, second: str) -> None:
        super().__init__(
            f'connector "{name}" is declared twice: by {first} and by {second}; '
            "uninstall one of the two packages or rename one of the connectors"
        )
        self.name = name
        self.first = first
        self.second = second


@dataclass(frozen=True)
class PluginProblem:
    """A plugin (or one connector of it) that could not be loaded; the hub runs without it."""

    plugin: str
    message: str

    def __str__(self) -> str:
        return f"{self.plugin}: {self.message}"


@dataclass(frozen=True)
class ConnectorInfo:
    """One registered connector, as the API, the flow validator and the runtime see it."""

    name: str
    version: str
    description: str
    permissions: dict[str, Any]
    sandbox: str
    #: the entry-point name and distribution that declared it, e.g. ``"hookhub (http)"``
    plugin: str
    cls: type[Connector] = field(repr=False)
    #: how a sandbox finds it: kind ``"python"``, target ``"module:QualName"``
    spec: ConnectorSpec = field(repr=False)
    #: JSON schema of ``cls.Config``
    config_schema: dict[str, Any] = field(repr=False)

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    def to_dict(self) -> dict[str, Any]:
        """What ``GET /api/v1/connectors`` shows for this connector."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "config_schema": self.config_schema,
            "sandbox": self.sandbox,
            "permissions": dict(self.permissions),
            "plugin": self.plugin,
        }


class Registry:
    """The connectors of this process, and what went wrong while loading plugins."""

    def __init__(
        self,
        connectors: Mapping[str, ConnectorInfo] | None = None,
        problems: Iterable[PluginProblem] = (),
        plugin_manager: pluggy.PluginManager | None = None,
    ) -> None:
        self.connectors: dict[str, ConnectorInfo] = dict(connectors or {})
        self.problems: list[PluginProblem] = list(problems)
        #: the plugin manager the registry was built from (``None`` for hand-built registries)
        self.plugin_manager = plugin_manager

    def __repr__(self) -> str:
        return f"<Registry connectors={sorted(self.connectors)} problems={len(self.problems)}>"

    @property
    def modules(self) -> list[str]:
        """Modules defining Python connectors: what the sandbox fork server pre-imports."""
        return sorted({i.cls.__module__ for i in self.connectors.values() if i.spec.kind == "python"})

    def get(self, name: str) -> ConnectorInfo | None:
        """The connector ``name``; ``"http@1"`` returns it only when its major version is 1.

        A longer pin (``"http@1.2"``) must match that many leading version components.
        """
        if not isinstance(name, str):
            return None
        base, sep, pin = name.partition("@")
        info = self.connectors.get(base)
        if info is None or not sep:
            return info
        if not _PIN_RE.match(pin):
            return None
        wanted = [int(p) for p in pin.split(".")]
        have = [int(p) for p in re.split(r"[.+-]", info.version)[:3]]
        return info if have[: len(wanted)] == wanted else None

    def exists(self, name: str) -> bool:
        return self.get(name) is not None

    def validate_config(self, name: str, config: Any) -> dict[str, Any]:
        """Marshmallow's error dict for ``config`` against the connector's schema; ``{}`` when fine."""
        info = self.get(name)
        if info is None:
            return {"_schema": [f'unknown connector "{name}"']}
        if not isinstance(config, Mapping):
            return {"_schema": [f"config must be an object, not {_json_type(config)}"]}
        return info.cls.Config().validate(dict(config))

    def list(self) -> list[ConnectorInfo]:
        return [self.connectors[n] for n in sorted(self.connectors)]


def load_registry(extra_plugins: Iterable[object] = (), entry_points: bool = True) -> Registry:
    """Build a registry from the ``hookhub`` entry points plus ``extra_plugins``.

    :param extra_plugins: plugin objects or modules to register as well (tests use this to add
        a plugin for one test).
    :param entry_points: load installed plugins (built-in ones included) from the entry points.
    :raises DuplicateConnectorError: two connectors share a name.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()

    problems: list[PluginProblem] = []

    def problem(plugin: str, message: str) -> None:
        log.warning("plugin %s not loaded: %s", plugin, message)
        problems.append(PluginProblem(plugin, message))

    def register(plugin: object, label: str) -> None:
        try:
            hash(plugin)
        except TypeError:
            problem(
                label,
                f"cannot register {type(plugin).__name__} objects: use a module, a class or an instance",
            )
            return
        if pm.is_registered(plugin):
            return
        label = _unique(label, pm)
        try:
            pm.register(plugin, name=label)
        except Exception as exc:  # pluggy's PluginValidationError, or anything a weird object raises
            problem(label, f"rejected by the plugin manager: {_one_line(exc)}")

    if entry_points:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_key):
            label = _ep_label(ep)
            try:
                plugin = ep.load()
            except Exception as exc:
                problem(label, f"could not import {ep.value}: {_one_line(exc)}")
                continue
            register(plugin, label)

    for plugin in extra_plugins:
        register(plugin, _object_label(plugin))

    connectors: dict[str, ConnectorInfo] = {}
    for label, plugin in list(pm.list_name_plugin()):
        if plugin is None or not any(i.plugin is plugin for i in pm.hook.hookhub_connectors.get_hookimpls()):
            continue
        others = [p for _, p in pm.list_name_plugin() if p is not None and p is not plugin]
        caller = pm.subset_hook_caller("hookhub_connectors", remove_plugins=others)
        try:
            results = caller()
        except Exception as exc:
            problem(label, f"hookhub_connectors() raised {_one_line(exc)}")
            continue
        for returned in results:
            for cls in _as_list(returned, label, problem):
                info = _connector_info(cls, label, problem)
                if info is None:
                    continue
                existing = connectors.get(info.name)
                if existing is not None:
                    if existing.cls is info.cls:  # one class re-exported by two plugins
                        continue
                    raise DuplicateConnectorError(info.name, existing.plugin, info.plugin)
                connectors[info.name] = info

    return Registry(connectors, problems, pm)


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (entry points only), built on first use."""
    return load_registry()


def reset_registry() -> None:
    """Forget the cached registry (tests; after installing a plugin)."""
    get_registry.cache_clear()


# --- helpers ---------------------------------------------------------------------------------


def _as_list(returned: Any, label: str, problem: Any) -> list[Any]:
    if isinstance(returned, (str, bytes, Mapping)) or not isinstance(returned, Iterable):
        problem(label, f"hookhub_connectors() must return a list of Connector classes, not {returned!r}")
        return []
    return list(returned)


def _connector_info(cls: Any, label: str, problem: Any) -> ConnectorInfo | None:
    if not (isinstance(cls, type) and issubclass(cls, Connector)) or cls is Connector:
        problem(label, f"{cls!r} is not a subclass of hub.sdk.Connector")
        return None
    where = f"{cls.__module__}.{cls.__qualname__}"
    name = cls.name
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problem(
            label,
            f"{where} has no valid name ({name!r}): use lowercase letters, digits, '-', '_' or '.'",
        )
        return None
    version = cls.version
    if not isinstance(version, str) or not _SEMVER_RE.match(version):
        problem(label, f'connector "{name}" has an invalid version {version!r} (expected semver, e.g. 1.0.0)')
        return None
    if not isinstance(cls.permissions, Mapping):
        problem(label, f'connector "{name}": permissions must be a dict, not {cls.permissions!r}')
        return None
    if cls.sandbox not in SANDBOXES:
        problem(label, f'connector "{name}": unknown sandbox {cls.sandbox!r} (one of {", ".join(SANDBOXES)})')
        return None
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, marshmallow.Schema)):
        problem(label, f'connector "{name}": Config must be a marshmallow Schema class')
        return None
    if cls.sandbox == "wasm":
        module_path = getattr(cls, "wasm_module", None)
        if not isinstance(module_path, (str, os.PathLike)) or not str(module_path):
            problem(label, f'connector "{name}": a wasm connector must set wasm_module (path of the module)')
            return None
        spec = ConnectorSpec(kind="wasm", target=os.fspath(module_path))
    else:
        if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
            problem(
                label,
                f'connector "{name}": {where} cannot be imported by the sandbox; define it at module level',
            )
            return None
        spec = ConnectorSpec(kind="python", target=f"{cls.__module__}:{cls.__qualname__}")
    try:
        schema = config_json_schema(config)
    except Exception as exc:
        problem(label, f'connector "{name}": cannot describe its Config as JSON schema: {_one_line(exc)}')
        return None
    description = cls.description or (cls.__doc__ or "").strip().split("\n", 1)[0]
    return ConnectorInfo(
        name=name,
        version=version,
        description=description,
        permissions=dict(cls.permissions),
        sandbox=cls.sandbox,
        plugin=label,
        cls=cls,
        spec=spec,
        config_schema=schema,
    )


def config_json_schema(schema: type[marshmallow.Schema] | marshmallow.Schema) -> dict[str, Any]:
    """JSON schema of a marshmallow schema, by apispec's converter (nested schemas inlined)."""
    converter = OpenAPIConverter(
        openapi_version="3.1.0",
        schema_name_resolver=lambda _schema: None,
        spec=APISpec(title="hookhub connectors", version="1", openapi_version="3.1.0"),
    )
    instance = schema() if isinstance(schema, type) else schema
    return converter.schema2jsonschema(instance)


def _ep_key(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    return (ep.dist.name if ep.dist else "", ep.name)


def _ep_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist.name if ep.dist is not None else None
    return f"{dist} ({ep.name})" if dist else ep.name


def _object_label(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    name = getattr(plugin, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def _unique(label: str, pm: pluggy.PluginManager) -> str:
    candidate, n = label, 1
    while pm.has_plugin(candidate):
        n += 1
        candidate = f"{label} #{n}"
    return candidate


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__
