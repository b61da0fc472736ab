"""Flow documents → validated, immutable DAGs.

``parse_flow`` is the only way a document becomes a :class:`Flow`. It never stops at the first mistake:
users fix documents in one go when every problem is listed with its path, and the API shows them
per field. Documents may come from YAML, so every value is type-checked before it is used, and
nothing but :class:`FlowInvalid` escapes.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from . import templates
from .problems import FlowInvalid, Problem, join_path

__all__ = [
    "EDGE_KEYWORDS",
    "ConnectorCatalog",
    "Edge",
    "Flow",
    "FlowInvalid",
    "Node",
    "Problem",
    "RetryPolicy",
    "parse_flow",
]

NODE_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
#: ``when`` values that are not expressions.
EDGE_KEYWORDS = frozenset({"on_success", "on_failure", "always"})
JOINS = frozenset({"all", "any"})

TOP_LEVEL_KEYS = frozenset({"name", "description", "nodes", "edges", "output"})
NODE_KEYS = frozenset(
    {
        "id",
        "name",
        "description",
        "connector",
        "config",
        "input",
        "retry",
        "timeout_seconds",
        "memory_mb",
        "join",
        "continue_on_error",
    }
)
EDGE_KEYS = frozenset({"from", "to", "when"})
MAX_NAME_LENGTH = 200
MAX_DEPTH = 64


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a node's connector is retried after a retryable failure."""

    max_attempts: int = 3
    backoff_seconds: float = 1.0
    multiplier: float = 2.0
    max_backoff_seconds: float = 60.0
    jitter: float = 0.1  # fraction of the delay, applied ±


# (key, kind, minimum, maximum): the accepted range of each retry setting
_RETRY_FIELDS: tuple[tuple[str, type, float, float], ...] = (
    ("max_attempts", int, 1, 100),
    ("backoff_seconds", float, 0, 86_400),
    ("multiplier", float, 1, 100),
    ("max_backoff_seconds", float, 0, 86_400),
    ("jitter", float, 0, 1),
)


@dataclass(frozen=True)
class Node:
    """One step: a connector called with a rendered config."""

    id: str
    connector: str
    config: dict
    retry: RetryPolicy
    timeout_seconds: float | None
    memory_mb: int | None
    join: str  # "all" | "any"
    continue_on_error: bool
    input: Any = None


@dataclass(frozen=True)
class Edge:
    """``source`` → ``target``, taken when ``when`` holds (a keyword or a "{{ expr }}" template)."""

    source: str
    target: str
    when: str = "on_success"

    @property
    def is_expression(self) -> bool:
        return self.when not in EDGE_KEYWORDS


@dataclass(frozen=True)
class Flow:
    """A validated DAG. ``nodes`` keeps document order, which breaks every tie (roots, topological order)."""

    name: str
    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    output: Any = None
    description: str | None = field(default=None, compare=False)

    @cached_property
    def _incoming(self) -> dict[str, list[Edge]]:
        index: dict[str, list[Edge]] = {n: [] for n in self.nodes}
        for e in self.edges:
            index.setdefault(e.target, []).append(e)
        return index

    @cached_property
    def _outgoing(self) -> dict[str, list[Edge]]:
        index: dict[str, list[Edge]] = {n: [] for n in self.nodes}
        for e in self.edges:
            index.setdefault(e.source, []).append(e)
        return index

    def incoming(self, node_id: str) -> list[Edge]:
        """Edges into ``node_id``, in document order."""
        return list(self._incoming.get(node_id, ()))

    def outgoing(self, node_id: str) -> list[Edge]:
        """Edges out of ``node_id``, in document order."""
        return list(self._outgoing.get(node_id, ()))

    def roots(self) -> list[str]:
        """Nodes with no incoming edge: they start when the run starts."""
        return [n for n in self.nodes if not self._incoming[n]]

    def predecessors(self, node_id: str) -> list[str]:
        """Distinct sources of ``node_id``'s incoming edges."""
        return list(dict.fromkeys(e.source for e in self._incoming.get(node_id, ())))

    def successors(self, node_id: str) -> list[str]:
        """Distinct targets of ``node_id``'s outgoing edges."""
        return list(dict.fromkeys(e.target for e in self._outgoing.get(node_id, ())))

    def ancestors(self, node_id: str) -> set[str]:
        """Every node with a path to ``node_id``: the only ones whose output can exist when it runs."""
        seen: set[str] = set()
        stack = self.predecessors(node_id)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.predecessors(n))
        return seen

    @cached_property
    def _topological(self) -> tuple[str, ...]:
        position = {n: i for i, n in enumerate(self.nodes)}
        remaining = {n: len(self.predecessors(n)) for n in self.nodes}
        order: list[str] = []
        ready = [n for n in self.nodes if remaining[n] == 0]
        while ready:
            ready.sort(key=position.__getitem__, reverse=True)
            n = ready.pop()
            order.append(n)
            for m in self.successors(n):
                remaining[m] -= 1
                if remaining[m] == 0:
                    ready.append(m)
        if len(order) != len(self.nodes):  # only reachable for a Flow built by hand, not by parse_flow
            raise ValueError(f"flow {self.name!r} has a cycle")
        return tuple(order)

    def topological_order(self) -> list[str]:
        """Every node after all its predecessors; ties go to document order."""
        return list(self._topological)


class ConnectorCatalog(Protocol):
    """What ``parse_flow`` needs to know about installed connectors."""

    def exists(self, name: str) -> bool:
        """True when ``name`` (maybe with a major-version pin, "http@1") is installed."""
        ...

    def validate_config(self, name: str, config: dict) -> dict:
        """A marshmallow-style error dict for ``config``, ``{}`` when valid."""
        ...


# --------------------------------------------------------------------------------------------- parsing


def _type_name(value: Any) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_template_string(value: Any) -> bool:
    return templates.is_template(value)


class _Parser:
    def __init__(self, catalog: ConnectorCatalog | None):
        self.catalog = catalog
        self.problems: list[Problem] = []
        # every string id in the document (even bad or duplicate ones, to avoid follow-up noise);
        # None when the node list itself is unusable, so references cannot be checked at all
        self.node_ids: set[str] | None = None

    def add(self, path: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, code, message))

    def unknown_keys(self, path: str, raw: Mapping, known, what: str, allowed=None) -> bool:
        """Report every key of ``raw`` outside ``known`` (or ``allowed(key)``); True when there was none."""
        expected = "one of " + ", ".join(sorted(known))
        ok = True
        for key in raw:
            if key not in known and not (allowed and allowed(key)):
                self.add(join_path(path, str(key)), "unknown_key", f"unknown {what}key {key!r}; expected {expected}")
                ok = False
        return ok

    # -- plain data ---------------------------------------------------------------------------------

    def check_data(self, value: Any, path: str, depth: int = 0) -> bool:
        """Values must be plain JSON data: the runtime stores and renders them. False when not."""
        if depth > MAX_DEPTH:
            self.add(path, "invalid_value", f"nested more than {MAX_DEPTH} levels deep")
            return False
        if value is None or isinstance(value, bool | int | str):
            return True
        if isinstance(value, float):
            if math.isfinite(value):
                return True
            self.add(path, "invalid_value", "numbers must be finite")
            return False
        if isinstance(value, list):
            ok = True
            for i, item in enumerate(value):
                ok = self.check_data(item, join_path(path, i), depth + 1) and ok
            return ok
        if isinstance(value, dict):
            ok = True
            for k, item in value.items():
                if not isinstance(k, str):
                    self.add(join_path(path, str(k)), "invalid_type", f"keys must be strings, got {_type_name(k)}")
                    ok = False
                else:
                    ok = self.check_data(item, join_path(path, k), depth + 1) and ok
            return ok
        self.add(
            path,
            "invalid_type",
            f"unsupported value of type {_type_name(value)}; use a string, number, boolean, null, list"
            " or mapping (quote dates in YAML)",
        )
        return False

    # -- document -----------------------------------------------------------------------------------

    def parse(self, doc: Any) -> Flow | None:
        if not isinstance(doc, Mapping):
            self.add("", "invalid_type", f"a flow document must be a mapping, got {_type_name(doc)}")
            return None
        self.unknown_keys("", doc, TOP_LEVEL_KEYS, "", allowed=lambda k: isinstance(k, str) and k.startswith("x-"))

        name = doc.get("name")
        if name is None:
            self.add("name", "required", "a flow needs a name")
        elif not isinstance(name, str):
            self.add("name", "invalid_type", f"name must be a string, got {_type_name(name)}")
        elif not name.strip():
            self.add("name", "required", "name must not be empty")
        elif len(name) > MAX_NAME_LENGTH:
            self.add("name", "invalid_value", f"name must be at most {MAX_NAME_LENGTH} characters")

        description = doc.get("description")
        if description is not None and not isinstance(description, str):
            self.add("description", "invalid_type", f"description must be a string, got {_type_name(description)}")

        nodes = self.parse_nodes(doc.get("nodes"), "nodes" in doc)
        edges = self.parse_edges(doc.get("edges"))
        self.check_cycles(edges)

        output = doc.get("output")
        if "output" in doc and self.check_data(output, "output"):
            self.problems.extend(templates.template_problems(output, "output", self.node_ids))

        if self.problems:
            return None
        return Flow(
            name=name,
            nodes={n.id: n for n in nodes},
            edges=tuple(e for e, _ in edges),
            output=copy.deepcopy(output),
            description=description,
        )

    # -- nodes --------------------------------------------------------------------------------------

    def parse_nodes(self, raw: Any, present: bool) -> list[Node]:
        if raw is None:
            self.add("nodes", "required", "a flow needs a list of nodes" if not present else "nodes is empty")
            return []
        if not isinstance(raw, list):
            self.add("nodes", "invalid_type", f"nodes must be a list, got {_type_name(raw)}")
            return []
        if not raw:
            self.add("nodes", "required", "a flow needs at least one node")
            return []
        # first pass: ids, so templates and edges anywhere can be checked against all of them
        ids: dict[str, int] = {}
        for i, item in enumerate(raw):
            if isinstance(item, Mapping):
                node_id = item.get("id")
                if isinstance(node_id, str) and node_id not in ids:
                    ids[node_id] = i
        self.node_ids = set(ids)
        parsed = []
        for i, item in enumerate(raw):
            node = self.parse_node(item, f"nodes[{i}]", i, ids)
            if node is not None:
                parsed.append(node)
        return parsed

    def parse_node(self, raw: Any, path: str, index: int, ids: dict[str, int]) -> Node | None:
        if not isinstance(raw, Mapping):
            self.add(path, "invalid_type", f"a node must be a mapping, got {_type_name(raw)}")
            return None
        before = len(self.problems)
        self.unknown_keys(path, raw, NODE_KEYS, "node ")

        node_id = raw.get("id")
        if node_id is None:
            self.add(join_path(path, "id"), "required", "a node needs an id")
        elif not isinstance(node_id, str):
            self.add(join_path(path, "id"), "invalid_type", f"id must be a string, got {_type_name(node_id)}")
        else:
            if not NODE_ID_RE.match(node_id):
                self.add(
                    join_path(path, "id"),
                    "bad_id",
                    f"id {node_id!r} must be 1-64 characters of a-z, 0-9, '_' and '-'",
                )
            if ids.get(node_id) != index:
                self.add(
                    join_path(path, "id"),
                    "duplicate_id",
                    f"id {node_id!r} is already used by nodes[{ids[node_id]}]",
                )

        for key in ("name", "description"):
            value = raw.get(key)
            if value is not None and not isinstance(value, str):
                self.add(join_path(path, key), "invalid_type", f"{key} must be a string, got {_type_name(value)}")

        connector = raw.get("connector")
        connector_ok = False
        if connector is None:
            self.add(join_path(path, "connector"), "required", "a node needs a connector")
        elif not isinstance(connector, str):
            self.add(
                join_path(path, "connector"),
                "invalid_type",
                f"connector must be a string, got {_type_name(connector)}",
            )
        elif not connector.strip():
            self.add(join_path(path, "connector"), "required", "connector must not be empty")
        elif self.catalog is not None:
            try:
                connector_ok = bool(self.catalog.exists(connector))
            except Exception as exc:
                self.add(join_path(path, "connector"), "unknown_connector", f"cannot look up connector: {exc}")
            else:
                if not connector_ok:
                    self.add(
                        join_path(path, "connector"),
                        "unknown_connector",
                        f"no installed connector named {connector!r}",
                    )

        config_path = join_path(path, "config")
        config = raw.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            self.add(config_path, "invalid_type", f"config must be a mapping, got {_type_name(config)}")
            config = None
        elif self.check_data(config, config_path):
            self.problems.extend(templates.template_problems(config, config_path, set(ids)))
            if connector_ok and self.catalog is not None:
                self.check_config(connector, config, config_path)

        node_input = raw.get("input")
        if "input" in raw and self.check_data(node_input, join_path(path, "input")):
            self.problems.extend(templates.template_problems(node_input, join_path(path, "input"), set(ids)))

        retry = self.parse_retry(raw.get("retry"), join_path(path, "retry"))

        timeout = raw.get("timeout_seconds")
        if timeout is not None and not (_is_number(timeout) and math.isfinite(timeout) and timeout > 0):
            code = "invalid_value" if _is_number(timeout) else "invalid_type"
            self.add(join_path(path, "timeout_seconds"), code, "timeout_seconds must be a positive number")

        memory = raw.get("memory_mb")
        if memory is not None and not (isinstance(memory, int) and not isinstance(memory, bool) and memory > 0):
            code = "invalid_value" if _is_number(memory) else "invalid_type"
            self.add(join_path(path, "memory_mb"), code, "memory_mb must be a positive integer")

        join = raw.get("join", "all")
        if join is None:
            join = "all"
        if join not in JOINS if isinstance(join, str) else True:
            code = "invalid_value" if isinstance(join, str) else "invalid_type"
            self.add(join_path(path, "join"), code, "join must be 'all' or 'any'")

        continue_on_error = raw.get("continue_on_error", False)
        if continue_on_error is None:
            continue_on_error = False
        if not isinstance(continue_on_error, bool):
            self.add(
                join_path(path, "continue_on_error"),
                "invalid_type",
                f"continue_on_error must be true or false, got {_type_name(continue_on_error)}",
            )

        if len(self.problems) != before or retry is None:
            return None
        return Node(
            id=node_id,
            connector=connector,
            config=copy.deepcopy(config),
            retry=retry,
            timeout_seconds=float(timeout) if timeout is not None else None,
            memory_mb=memory,
            join=join,
            continue_on_error=continue_on_error,
            input=copy.deepcopy(node_input),
        )

    def parse_retry(self, raw: Any, path: str) -> RetryPolicy | None:
        if raw is None:
            return RetryPolicy()
        if not isinstance(raw, Mapping):
            self.add(path, "invalid_type", f"retry must be a mapping, got {_type_name(raw)}")
            return None
        ok = self.unknown_keys(path, raw, {f[0] for f in _RETRY_FIELDS}, "retry ")
        values: dict[str, Any] = {}
        for key, kind, low, high in _RETRY_FIELDS:
            if key not in raw or raw[key] is None:
                continue
            value = raw[key]
            p = join_path(path, key)
            if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
                self.add(p, "invalid_type", f"{key} must be an integer, got {_type_name(value)}")
                ok = False
            elif kind is float and not _is_number(value):
                self.add(p, "invalid_type", f"{key} must be a number, got {_type_name(value)}")
                ok = False
            elif not (math.isfinite(value) and low <= value <= high):
                self.add(p, "invalid_value", f"{key} must be between {low:g} and {high:g}")
                ok = False
            else:
                values[key] = kind(value)
        return RetryPolicy(**values) if ok else None

    def check_config(self, connector: str, config: dict, path: str) -> None:
        try:
            errors = self.catalog.validate_config(connector, copy.deepcopy(config))  # type: ignore[union-attr]
        except Exception as exc:
            self.add(path, "invalid_config", f"connector {connector!r} could not validate its config: {exc}")
            return
        if errors:
            self.config_errors(errors, config, path, 0)

    def config_errors(self, errors: Any, value: Any, path: str, depth: int) -> None:
        """Flatten a marshmallow error dict into problems, dropping errors about template values.

        A template's value is only known at run time, so "Not a valid integer." for ``"{{ x }}"`` is noise.
        """
        if _is_template_string(value):
            return
        if depth > MAX_DEPTH:
            return
        if isinstance(errors, Mapping):
            for key, sub in errors.items():
                # "_schema" is about the mapping itself; marshmallow's Dict field reports a bad entry as
                # {entry: {"value": [...]}} (or "key"), which belongs to the entry when it is a scalar
                if key == "_schema" or (
                    key in ("key", "value") and not isinstance(value, Mapping | list) and value is not None
                ):
                    self.config_errors(sub, value, path, depth + 1)
                    continue
                child = _child(value, key)
                self.config_errors(sub, child, join_path(path, key), depth + 1)
        elif isinstance(errors, list | tuple):
            if all(isinstance(m, str) for m in errors):
                for message in errors:
                    self.add(path, "invalid_config", message)
            else:
                for sub in errors:
                    self.config_errors(sub, value, path, depth + 1)
        else:
            self.add(path, "invalid_config", str(errors))

    # -- edges --------------------------------------------------------------------------------------

    def parse_edges(self, raw: Any) -> list[tuple[Edge, str]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.add("edges", "invalid_type", f"edges must be a list, got {_type_name(raw)}")
            return []
        known = self.node_ids
        edges: list[tuple[Edge, str]] = []
        seen: dict[Edge, int] = {}
        for i, item in enumerate(raw):
            path = f"edges[{i}]"
            if not isinstance(item, Mapping):
                self.add(path, "invalid_type", f"an edge must be a mapping, got {_type_name(item)}")
                continue
            ok = self.unknown_keys(path, item, EDGE_KEYS, "edge ")
            ends = []
            for key in ("from", "to"):
                value = item.get(key)
                if value is None:
                    self.add(join_path(path, key), "required", f"an edge needs '{key}'")
                    ok = False
                elif not isinstance(value, str):
                    self.add(join_path(path, key), "invalid_type", f"'{key}' must be a node id string")
                    ok = False
                elif known is not None and value not in known:
                    self.add(join_path(path, key), "unknown_node", f"no node with id {value!r}")
                    ok = False
                ends.append(value)
            when = item.get("when", "on_success")
            if when is None:
                when = "on_success"
            when_path = join_path(path, "when")
            if not isinstance(when, str):
                self.add(when_path, "invalid_type", "when must be on_success, on_failure, always or '{{ expr }}'")
                ok = False
            elif when not in EDGE_KEYWORDS:
                if not templates.is_template(when):
                    self.add(
                        when_path,
                        "invalid_value",
                        f"when must be on_success, on_failure, always or '{{{{ expr }}}}', got {when!r}",
                    )
                    ok = False
                else:
                    found = templates.template_problems(when, when_path, known)
                    if found:
                        self.problems.extend(found)
                        ok = False
                    elif not templates.is_single_expression(when):
                        self.add(when_path, "invalid_value", "an edge condition must be exactly one '{{ expr }}'")
                        ok = False
            if ok and ends[0] == ends[1]:
                self.add(path, "cycle", f"node {ends[0]!r} has an edge to itself")
                ok = False
            if ok:
                edge = Edge(source=ends[0], target=ends[1], when=when)
                if edge in seen:
                    self.add(path, "duplicate_edge", f"same edge as edges[{seen[edge]}]")
                    continue
                seen[edge] = i
                edges.append((edge, path))
        return edges

    def check_cycles(self, edges: list[tuple[Edge, str]]) -> None:
        """Report each cycle once (per strongly connected component), naming its nodes in order."""
        graph: dict[str, list[str]] = {}
        for e, _ in edges:
            graph.setdefault(e.source, []).append(e.target)
            graph.setdefault(e.target, [])
        for component in _strongly_connected(graph):
            if len(component) < 2:
                continue
            members = set(component)
            first = next(p for e, p in edges if e.source in members and e.target in members)
            cycle = _cycle_in(graph, members)
            self.add(first, "cycle", "cycle: " + " → ".join([*cycle, cycle[0]]))


def _child(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, list):
        try:
            index = int(key)
        except (TypeError, ValueError):
            return None
        return value[index] if 0 <= index < len(value) else None
    return None


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (documents can be long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def _cycle_in(graph: dict[str, list[str]], members: set[str]) -> list[str]:
    """One concrete cycle inside a strongly connected component, starting at its first-listed node."""
    start = next(n for n in graph if n in members)
    path = [start]
    position = {start: 0}
    node = start
    while True:
        node = next(m for m in graph[node] if m in members)
        if node in position:
            return path[position[node] :]
        position[node] = len(path)
        path.append(node)


def parse_flow(doc: Any, catalog: ConnectorCatalog | None = None) -> Flow:
    """Validate a decoded JSON/YAML flow document and build its :class:`Flow`.

    Raises :class:`FlowInvalid` listing every problem found. Without a ``catalog`` connector names and
    configs are only type-checked.
    """
    parser = _Parser(catalog)
    try:
        flow = parser.parse(doc)
    except RecursionError:
        raise FlowInvalid([*parser.problems, Problem("", "invalid_value", "document nested too deeply")]) from None
    if flow is None:
        raise FlowInvalid(parser.problems)
    return flow
