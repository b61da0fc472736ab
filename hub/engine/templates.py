"""Jinja2 templates in flow documents: one sandboxed environment, checked at save time, rendered per attempt.

A string that is exactly one ``{{ expr }}`` keeps the expression's native type (a dict stays a dict), so
``json: "{{ nodes.fetch.output.body }}"`` forwards structured data instead of its text. Any other string
with template syntax renders to a string. Undefined names fail loudly (StrictUndefined): a typo must not
silently send an empty header to somebody's API. ``a.b`` on a mapping looks up the key ``b`` before any
attribute, so payload keys named ``items``, ``keys`` or ``values`` read as data, not as dict methods.

Compiled templates are cached by source because rendering sits on the hot path of every attempt.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined
from jinja2 import nodes as jnodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.meta import find_undeclared_variables
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from .problems import Problem, join_path

__all__ = [
    "ALLOWED_NAMES",
    "SCOPE_NAMES",
    "TemplateError",
    "TemplateRefs",
    "env",
    "is_single_expression",
    "is_template",
    "referenced_names",
    "references",
    "render",
    "template_problems",
    "template_syntax_problems",
]

#: The names a flow's templates may use; the runtime builds exactly these.
SCOPE_NAMES = frozenset({"trigger", "nodes", "secrets", "run"})

_MARKERS = ("{{", "{%", "{#")
_MAX_DEPTH = 100
_MAX_SEQUENCE = 1_000_000  # longest str/list a `*` may build
_MAX_POW_BITS = 10_000  # largest integer a `**` may build
_MESSAGE_SOURCE_CHARS = 120


class _HubSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus limits on ``*`` and ``**``, which could otherwise exhaust memory/CPU."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Payload keys win over dict methods: `trigger.body.items` is the webhook's "items", not dict.items.
        if isinstance(obj, Mapping) and isinstance(attribute, str):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > _MAX_SEQUENCE:
                    raise SecurityError("the result of '*' would be too long")
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and left.bit_length() * right > _MAX_POW_BITS
        ):
            raise SecurityError("the result of '**' would be too large")
        return super().call_binop(context, operator, left, right)


#: The one environment every template is compiled in.
env: ImmutableSandboxedEnvironment = _HubSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)

#: Names a template may reference: the run scope plus Jinja's own globals (range, dict, namespace, ...).
ALLOWED_NAMES = SCOPE_NAMES | frozenset(env.globals)


class TemplateError(Exception):
    """Rendering failed; ``path`` locates the string inside the rendered value (e.g. "config.url")."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def is_template(s: Any) -> bool:
    """True for a string containing Jinja syntax; everything else is passed through untouched."""
    return isinstance(s, str) and any(m in s for m in _MARKERS)


def _shorten(source: str) -> str:
    source = source.strip()
    if len(source) > _MESSAGE_SOURCE_CHARS:
        source = source[: _MESSAGE_SOURCE_CHARS - 1] + "…"
    return source


@dataclass(frozen=True)
class _Compiled:
    ast: jnodes.Template
    expression: str | None  # the inner source when the string is exactly one {{ expr }}


@lru_cache(maxsize=4096)
def _parse(source: str) -> _Compiled:
    """Parse (and syntax-check) a template once; raises jinja2's TemplateSyntaxError."""
    ast = env.parse(source)
    return _Compiled(ast=ast, expression=_single_expression(source, ast))


def _single_expression(source: str, ast: jnodes.Template) -> str | None:
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    if stripped != source:
        ast = env.parse(stripped)
    body = ast.body
    if not (
        len(body) == 1
        and isinstance(body[0], jnodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], jnodes.TemplateData)
    ):
        return None
    inner = stripped[2:-2]
    # whitespace-control markers ("{{- x -}}") belong to the delimiters, not the expression
    if inner.startswith(("-", "+")):
        inner = inner[1:]
    if inner.endswith(("-", "+")):
        inner = inner[:-1]
    return inner


@lru_cache(maxsize=4096)
def _expression(inner: str) -> Any:
    return env.compile_expression(inner, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str) -> Any:
    return env.from_string(source)


def is_single_expression(s: Any) -> bool:
    """True when ``s`` is exactly one ``{{ expr }}`` (surrounding whitespace allowed): rendered natively."""
    if not is_template(s):
        return False
    try:
        return _parse(s).expression is not None
    except Exception:
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed in the sandbox: {exc}"
    if isinstance(exc, UndefinedError):
        return f"undefined value: {exc.message}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, RecursionError):
        return "template too deeply nested"
    return f"{type(exc).__name__}: {exc}"


_SEQUENCES = (
    list,
    tuple,
    range,
    types.GeneratorType,
    Iterator,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)


def _finalize(value: Any, path: str, source: str, depth: int = 0) -> Any:
    """Turn an expression's result into plain data: lists for lazy sequences, new containers, no Undefined."""
    if depth > _MAX_DEPTH:
        raise TemplateError(path, f"result nested too deeply in {_shorten(source)!r}")
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # always raises UndefinedError / SecurityError
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _finalize(v, path, source, depth + 1) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        return [_finalize(v, path, source, depth + 1) for v in value]
    return value


def _render_string(source: str, scope: Mapping[str, Any], path: str) -> Any:
    try:
        compiled = _parse(source)
        if compiled.expression is not None:
            return _finalize(_expression(compiled.expression)(**scope), path, source)
        return _template(source).render(scope)
    except TemplateError:
        raise
    except Exception as exc:  # anything a user's expression can raise: TypeError, ZeroDivisionError, ...
        raise TemplateError(path, f"{_reason(exc)} in {_shorten(source)!r}") from exc


def render(value: Any, scope: Mapping[str, Any], path: str = "") -> Any:
    """Render every template string inside ``value`` (dicts and lists are walked) against ``scope``.

    Returns new containers; non-template values pass through. Raises :class:`TemplateError` naming the
    path of the failing string inside ``value``.
    """
    return _render(value, scope, path, 0)


def _render(value: Any, scope: Mapping[str, Any], path: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise TemplateError(path, "value nested too deeply")
    if isinstance(value, str):
        return _render_string(value, scope, path) if is_template(value) else value
    if isinstance(value, Mapping):
        return {k: _render(v, scope, join_path(path, k), depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render(v, scope, join_path(path, i), depth + 1) for i, v in enumerate(value)]
    return value


def _template_strings(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Yield (path, source) for every template string inside ``value``."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _template_strings(v, join_path(path, k), depth + 1)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _template_strings(v, join_path(path, i), depth + 1)


_FORBIDDEN_TAGS = (
    (jnodes.Extends, "extends"),
    (jnodes.Include, "include"),
    (jnodes.Import, "import"),
    (jnodes.FromImport, "from ... import"),
)


def _syntax_problem(source: str, path: str) -> Problem | None:
    try:
        compiled = _parse(source)
        if compiled.expression is not None:
            _expression(compiled.expression)
        else:
            _template(source)
    except TemplateSyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno and "\n" in source else ""
        return Problem(path, "template_syntax", f"template syntax error{where}: {exc.message}")
    except Exception as exc:  # RecursionError on absurd nesting, and whatever else the parser throws
        return Problem(path, "template_syntax", f"template cannot be compiled: {_reason(exc)}")
    for node_type, tag in _FORBIDDEN_TAGS:
        if compiled.ast.find(node_type) is not None:
            return Problem(path, "template_syntax", f"'{tag}' is not available in flow templates")
    return None


def template_syntax_problems(value: Any, path: str) -> list[Problem]:
    """Syntax problems of every template string inside ``value``, each with its document path."""
    problems = []
    for p, source in _template_strings(value, path):
        problem = _syntax_problem(source, p)
        if problem is not None:
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class TemplateRefs:
    """What templates reference, as far as the AST tells.

    ``dynamic_nodes``/``dynamic_secrets`` are true when ``nodes``/``secrets`` is used other than with a
    literal key (``secrets[name]``, ``secrets | items``), i.e. when the exact set cannot be known.
    """

    names: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    dynamic_nodes: bool = False
    dynamic_secrets: bool = False

    def __or__(self, other: TemplateRefs) -> TemplateRefs:
        return TemplateRefs(
            self.names | other.names,
            self.nodes | other.nodes,
            self.secrets | other.secrets,
            self.dynamic_nodes or other.dynamic_nodes,
            self.dynamic_secrets or other.dynamic_secrets,
        )


@lru_cache(maxsize=4096)
def _source_refs(source: str) -> TemplateRefs:
    ast = _parse(source).ast
    names = frozenset(find_undeclared_variables(ast))
    keyed: dict[str, set[str]] = {"nodes": set(), "secrets": set()}
    direct: set[int] = set()  # ids of Name nodes used as `name.key` or `name['key']`
    for node in ast.find_all((jnodes.Getattr, jnodes.Getitem)):
        base = node.node
        if not (isinstance(base, jnodes.Name) and base.name in keyed and base.ctx == "load"):
            continue
        if isinstance(node, jnodes.Getattr):
            key: Any = node.attr
        elif isinstance(node.arg, jnodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        else:
            continue
        keyed[base.name].add(key)
        direct.add(id(base))
    dynamic = {n.name for n in ast.find_all(jnodes.Name) if n.name in keyed and n.ctx == "load" and id(n) not in direct}
    return TemplateRefs(
        names=names,
        nodes=frozenset(keyed["nodes"]) if "nodes" in names else frozenset(),
        secrets=frozenset(keyed["secrets"]) if "secrets" in names else frozenset(),
        dynamic_nodes="nodes" in dynamic and "nodes" in names,
        dynamic_secrets="secrets" in dynamic and "secrets" in names,
    )


def references(value: Any) -> TemplateRefs:
    """Names, node ids and secret names referenced by the templates in ``value`` (invalid ones ignored).

    The runtime uses ``secrets`` to hand a node only the secrets it references.
    """
    refs = TemplateRefs()
    for _, source in _template_strings(value, ""):
        try:
            refs = refs | _source_refs(source)
        except Exception:
            continue
    return refs


def referenced_names(value: Any) -> set[str]:
    """Top-level names the templates in ``value`` read from their scope."""
    return set(references(value).names)


def template_problems(value: Any, path: str, node_ids: set[str] | frozenset[str] | None = None) -> list[Problem]:
    """Syntax problems, names outside the allowed scope, and ``nodes.<id>`` references to unknown ids."""
    problems = []
    for p, source in _template_strings(value, path):
        problem = _syntax_problem(source, p)
        if problem is not None:
            problems.append(problem)
            continue
        try:
            refs = _source_refs(source)
        except Exception:  # analysis is best effort; syntax already passed
            continue
        for name in sorted(refs.names - ALLOWED_NAMES):
            problems.append(
                Problem(
                    p,
                    "unknown_name",
                    f"unknown name {name!r} in template; available: {', '.join(sorted(SCOPE_NAMES))}",
                )
            )
        if node_ids is not None:
            for node_id in sorted(refs.nodes - set(node_ids)):
                problems.append(Problem(p, "unknown_node", f"template refers to unknown node {node_id!r}"))
    return problems
