"""Templates: native types for single expressions, strings otherwise, loud undefined names, a real sandbox."""

from __future__ import annotations

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hub.engine import TemplateError, is_template, referenced_names, references, render
from hub.engine.templates import (
    _expression,
    _parse,
    env,
    is_single_expression,
    template_problems,
    template_syntax_problems,
)

SCOPE = {
    "trigger": {"body": {"customer": "cus_1", "amount": 42, "items": [{"id": 1}, {"id": 2}], "ok": True}},
    "nodes": {"fetch": {"output": {"status": 200, "body": {"name": "Ada"}}, "status": "succeeded"}},
    "secrets": {"TOKEN": "s3cr3t"},
    "run": {"id": "r1", "flow_id": 7, "flow_version": 2},
}


def test_environment_is_sandboxed_and_strict():
    assert isinstance(env, ImmutableSandboxedEnvironment)
    assert env.undefined is StrictUndefined


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{ trigger.body.amount }}", 42),
        ("  {{ trigger.body.amount }}\n", 42),
        ("{{- trigger.body.amount -}}", 42),
        ("{{ nodes.fetch.output.body }}", {"name": "Ada"}),
        ("{{ trigger.body.items }}", [{"id": 1}, {"id": 2}]),
        ("{{ trigger.body.ok }}", True),
        ("{{ none }}", None),
        ("{{ trigger.body.amount * 2 + 0.5 }}", 84.5),
        ("{{ trigger.body['customer'] }}", "cus_1"),
        ("{{ trigger.body.items | map(attribute='id') }}", [1, 2]),  # lazy generator → list
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ {'a': run.id} }}", {"a": "r1"}),
        ("{{ trigger.body.missing | default('x') }}", "x"),
        ("{{ trigger.body.missing is defined }}", False),
        ("{{ '}}' }}", "}}"),
        ("{{ range(3) }}", [0, 1, 2]),
    ],
)
def test_single_expression_keeps_native_type(value, expected):
    assert render(value, SCOPE) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Paid: {{ nodes.fetch.output.body.name }}", "Paid: Ada"),
        ("{{ trigger.body.amount }}{{ trigger.body.amount }}", "4242"),
        ("{{ trigger.body.amount }} ", 42),
        ("x{{ trigger.body.amount }}", "x42"),
        ("{% for i in trigger.body.items %}{{ i.id }},{% endfor %}", "1,2,"),
        ("{% if trigger.body.ok %}yes{% endif %}", "yes"),
        ("{# just a comment #}", ""),
        ("<b>{{ '<i>' }}</b>", "<b><i></b>"),  # no HTML autoescaping: configs are not HTML
        ("no templates here", "no templates here"),
        ("{ not one }", "{ not one }"),
    ],
)
def test_other_strings_render_to_strings(value, expected):
    assert render(value, SCOPE) == expected


def test_render_walks_structures_and_passes_other_values_through():
    value = {
        "url": "https://x/{{ trigger.body.customer }}",
        "json": "{{ trigger.body }}",
        "list": [1, None, True, 2.5, "{{ run.flow_id }}"],
        "tuple": ("{{ run.id }}",),
    }
    assert render(value, SCOPE) == {
        "url": "https://x/cus_1",
        "json": SCOPE["trigger"]["body"],
        "list": [1, None, True, 2.5, 7],
        "tuple": ["r1"],
    }
    assert render(5, SCOPE) == 5 and render(None, SCOPE) is None


def test_rendered_values_are_copies_of_the_scope():
    out = render({"b": "{{ nodes.fetch.output.body }}"}, SCOPE)
    out["b"]["name"] = "changed"
    assert SCOPE["nodes"]["fetch"]["output"]["body"]["name"] == "Ada"


@pytest.mark.parametrize(
    ("value", "path", "fragment"),
    [
        ({"url": "{{ trigger.body.nope }}"}, "config.url", "'dict object' has no attribute 'nope'"),
        ({"h": {"x": "a {{ secretz.X }}"}}, "config.h.x", "'secretz' is undefined"),
        ({"l": ["ok", "{{ nodes.other.output }}"]}, "config.l[1]", "no attribute 'other'"),
        ({"n": "{{ {'a': nodes.other} }}"}, "config.n", "no attribute 'other'"),  # hidden inside a result
        ({"d": "{{ 1 / 0 }}"}, "config.d", "ZeroDivisionError"),
        ({"t": "{{ 'a' + 1 }}"}, "config.t", "TypeError"),
        ({"s": "x{{ 'a' + 1 }}"}, "config.s", "TypeError"),
    ],
)
def test_errors_carry_path_and_a_readable_message(value, path, fragment):
    with pytest.raises(TemplateError) as info:
        render(value, SCOPE, "config")
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value).startswith(path + ": ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "x {{ trigger.__init__ }}",
        "{{ trigger.body.items.append(1) }}",  # immutable sandbox: no mutating methods
        "{{ trigger.body.update({'a': 1}) }}",
        "{{ 'a' * 100000000 }}",
        "{{ [1] * 10000000 }}",
        "{{ 10 ** 100000 }}",
        "{{ range(10000000) | list }}",
    ],
)
def test_sandbox_blocks_escapes_and_bombs(source):
    with pytest.raises(TemplateError) as info:
        render({"v": source}, SCOPE)
    assert info.value.path == "v"
    assert SCOPE["trigger"]["body"]["items"] == [{"id": 1}, {"id": 2}]


def test_unsafe_attribute_message_mentions_the_sandbox():
    with pytest.raises(TemplateError, match="not allowed in the sandbox"):
        render("{{ ''.__class__ }}", {})


def test_modest_arithmetic_still_works():
    assert render("{{ 'ab' * 3 }}", {}) == "ababab" and render("{{ 2 ** 10 }}", {}) == 1024


def test_is_template():
    assert is_template("{{ x }}") and is_template("a {% if x %}") and is_template("{# c #}")
    assert not is_template("plain") and not is_template("{ x }") and not is_template(5) and not is_template(None)


@pytest.mark.parametrize(
    ("source", "single"),
    [
        ("{{ x }}", True),
        (" {{ x }} ", True),
        ("{{ x }}{{ y }}", False),
        ("{{ x }} and {{ y }}", False),
        ("a {{ x }}", False),
        ("{% if x %}{{ x }}{% endif %}", False),
        ("{{ x", False),
        ("plain", False),
    ],
)
def test_is_single_expression(source, single):
    assert is_single_expression(source) is single


def test_compiled_templates_are_cached():
    _parse.cache_clear()
    _expression.cache_clear()
    for _ in range(3):
        render("{{ run.id }}", SCOPE)
    assert _parse.cache_info().hits == 2 and _expression.cache_info().misses == 1


def test_syntax_problems_have_paths():
    value = {"a": "{{ ok }}", "b": ["{{ x", "{% for %}"], "c": "line1\n{{ y y }}"}
    problems = template_syntax_problems(value, "nodes[0].config")
    assert [(p.path, p.code) for p in problems] == [
        ("nodes[0].config.b[0]", "template_syntax"),
        ("nodes[0].config.b[1]", "template_syntax"),
        ("nodes[0].config.c", "template_syntax"),
    ]
    assert "line 2" in problems[2].message


def test_absurd_nesting_is_a_syntax_problem_not_a_crash():
    [p] = template_syntax_problems("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "x")
    assert p.code == "template_syntax"


def test_name_problems():
    value = {
        "a": "{{ trigger.body }} {{ foo }} {{ range(2) | list }} {{ lipsum }}",
        "b": "{% set z = 1 %}{% for i in nodes %}{{ i }}{{ loop.index }}{{ z }}{% endfor %}",
        "c": "{{ nodes.known.output }} {{ nodes['ghost'].output }} {{ nodes[run.id] }}",
    }
    problems = template_problems(value, "p", {"known"})
    assert [(p.path, p.code) for p in problems] == [("p.a", "unknown_name"), ("p.c", "unknown_node")]
    assert "'foo'" in problems[0].message and "'ghost'" in problems[1].message


def test_references():
    refs = references(
        {"a": "{{ secrets.A }} {{ secrets['B'] }}", "b": ["{{ nodes.fetch.output }}"], "c": "{{ trigger }}"}
    )
    assert refs.names == {"secrets", "nodes", "trigger"}
    assert refs.secrets == {"A", "B"} and refs.nodes == {"fetch"}
    assert not refs.dynamic_secrets and not refs.dynamic_nodes
    refs = references("{{ secrets[trigger.body.name] }} {% for n in nodes %}{% endfor %}")
    assert refs.dynamic_secrets and refs.dynamic_nodes
    shadowed = references("{% set secrets = {'A': 1} %}{{ secrets.A }}")
    assert shadowed.secrets == frozenset()
    assert references("{{ broken") == references(None)
    assert referenced_names(["{{ run.id }}", "{{ trigger }}"]) == {"run", "trigger"}


def test_mapping_keys_win_over_dict_methods():
    assert render("{{ d.items }}", {"d": {"items": [1]}}) == [1]
    assert render("{{ d.items() | list }}", {"d": {"a": 1}}) == [["a", 1]]
    assert render("{{ d.keys() | list }}", {"d": {"a": 1}}) == ["a"]
