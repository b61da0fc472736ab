"""parse_flow: every problem reported with its path and a stable code, all at once."""

from __future__ import annotations

import copy
import datetime

import pytest

from hub.engine import Edge, FlowInvalid, Problem, RetryPolicy, parse_flow
from hub.engine.problems import join_path

from .catalog import BrokenCatalog, FakeCatalog


def node(id: str, connector: str = "noop", **extra) -> dict:
    return {"id": id, "connector": connector, **extra}


def doc(*nodes: dict, edges: list | None = None, **extra) -> dict:
    d = {"name": "f", "nodes": list(nodes) or [node("a")]}
    if edges is not None:
        d["edges"] = edges
    d.update(extra)
    return d


def problems(d, catalog=None) -> list[Problem]:
    with pytest.raises(FlowInvalid) as info:
        parse_flow(d, catalog)
    return info.value.problems


def codes(d, catalog=None) -> set[tuple[str, str]]:
    return {(p.path, p.code) for p in problems(d, catalog)}


SPEC_EXAMPLE = {
    "name": "stripe-payment-to-sheet",
    "output": "{{ nodes.notify.output }}",
    "nodes": [
        {
            "id": "fetch",
            "connector": "http",
            "config": {
                "method": "GET",
                "url": "https://api.example.com/customers/{{ trigger.body.data.object.customer }}",
                "headers": {"Authorization": "Bearer {{ secrets.EXAMPLE_TOKEN }}"},
            },
            "retry": {"max_attempts": 3, "backoff_seconds": 1, "multiplier": 2, "max_backoff_seconds": 60},
            "timeout_seconds": 30,
            "memory_mb": 256,
        },
        {
            "id": "notify",
            "connector": "email",
            "config": {"to": ["ops@example.com"], "subject": "Paid: {{ nodes.fetch.output.body.name }}"},
        },
    ],
    "edges": [{"from": "fetch", "to": "notify"}],
}


def test_spec_example_parses():
    flow = parse_flow(SPEC_EXAMPLE, FakeCatalog())
    assert flow.name == "stripe-payment-to-sheet"
    assert list(flow.nodes) == ["fetch", "notify"]
    fetch = flow.nodes["fetch"]
    assert fetch.retry == RetryPolicy(3, 1.0, 2.0, 60.0, 0.1)
    assert isinstance(fetch.retry.backoff_seconds, float)
    assert fetch.timeout_seconds == 30.0 and fetch.memory_mb == 256
    assert fetch.join == "all" and fetch.continue_on_error is False and fetch.input is None
    assert flow.edges == (Edge("fetch", "notify", "on_success"),)
    assert flow.output == "{{ nodes.notify.output }}"


def test_parsed_flow_does_not_alias_the_document():
    d = copy.deepcopy(SPEC_EXAMPLE)
    flow = parse_flow(d)
    d["nodes"][0]["config"]["headers"]["Authorization"] = "changed"
    assert flow.nodes["fetch"].config["headers"]["Authorization"].startswith("Bearer")


def test_defaults_and_optional_fields():
    flow = parse_flow(
        doc(
            node("a", input={"x": "{{ trigger.body }}"}, join="any", continue_on_error=True, retry=None),
            edges=None,
            description="hi",
            **{"x-ui": {"pos": 1}},
        )
    )
    a = flow.nodes["a"]
    assert a.config == {} and a.retry == RetryPolicy() and a.timeout_seconds is None and a.memory_mb is None
    assert a.join == "any" and a.continue_on_error is True and a.input == {"x": "{{ trigger.body }}"}
    assert flow.edges == () and flow.description == "hi"


def test_pinned_connector_goes_to_the_catalog_whole():
    catalog = FakeCatalog()
    flow = parse_flow(doc(node("a", "http@1", config={"url": "https://x.example"})), catalog)
    assert flow.nodes["a"].connector == "http@1"
    assert catalog.seen == ["http@1"]


def test_without_catalog_connectors_are_only_type_checked():
    assert parse_flow(doc(node("a", "whatever"))).nodes["a"].connector == "whatever"


# (document, expected (path, code) pairs): each row one kind of mistake
CASES = [
    pytest.param([], {("", "invalid_type")}, id="not-a-mapping"),
    pytest.param("name: x", {("", "invalid_type")}, id="string-doc"),
    pytest.param(None, {("", "invalid_type")}, id="null-doc"),
    pytest.param({"nodes": [node("a")]}, {("name", "required")}, id="name-missing"),
    pytest.param(doc(name="  "), {("name", "required")}, id="name-blank"),
    pytest.param(doc(name=5), {("name", "invalid_type")}, id="name-not-string"),
    pytest.param(doc(name="x" * 201), {("name", "invalid_value")}, id="name-too-long"),
    pytest.param(doc(description=[1]), {("description", "invalid_type")}, id="description-type"),
    pytest.param({"name": "f"}, {("nodes", "required")}, id="nodes-missing"),
    pytest.param({"name": "f", "nodes": None}, {("nodes", "required")}, id="nodes-null"),
    pytest.param({"name": "f", "nodes": []}, {("nodes", "required")}, id="nodes-empty"),
    pytest.param({"name": "f", "nodes": {"a": {}}}, {("nodes", "invalid_type")}, id="nodes-mapping"),
    pytest.param(doc(node("a"), "b"), {("nodes[1]", "invalid_type")}, id="node-not-mapping"),
    pytest.param(doc(node("a"), extra=1), {("extra", "unknown_key")}, id="unknown-top-key"),
    pytest.param(doc({"connector": "noop"}), {("nodes[0].id", "required")}, id="id-missing"),
    pytest.param(doc(node("A b")), {("nodes[0].id", "bad_id")}, id="id-pattern"),
    pytest.param(doc(node("x" * 65)), {("nodes[0].id", "bad_id")}, id="id-too-long"),
    pytest.param(doc(node("")), {("nodes[0].id", "bad_id")}, id="id-empty"),
    pytest.param(doc(node(7)), {("nodes[0].id", "invalid_type")}, id="id-int"),
    pytest.param(doc(node("a"), node("a")), {("nodes[1].id", "duplicate_id")}, id="id-duplicate"),
    pytest.param(doc(node("a", colour="red")), {("nodes[0].colour", "unknown_key")}, id="unknown-node-key"),
    pytest.param(doc({"id": "a"}), {("nodes[0].connector", "required")}, id="connector-missing"),
    pytest.param(doc(node("a", "")), {("nodes[0].connector", "required")}, id="connector-empty"),
    pytest.param(doc(node("a", 3)), {("nodes[0].connector", "invalid_type")}, id="connector-type"),
    pytest.param(doc(node("a", "nope")), {("nodes[0].connector", "unknown_connector")}, id="connector-unknown"),
    pytest.param(doc(node("a", config=[1])), {("nodes[0].config", "invalid_type")}, id="config-type"),
    pytest.param(
        doc(node("a", config={"value": datetime.date(2024, 1, 1)})),
        {("nodes[0].config.value", "invalid_type")},
        id="config-yaml-date",
    ),
    pytest.param(
        doc(node("a", config={"value": {1: "x"}})), {('nodes[0].config.value["1"]', "invalid_type")}, id="int-key"
    ),
    pytest.param(
        doc(node("a", config={"value": float("nan")})), {("nodes[0].config.value", "invalid_value")}, id="nan"
    ),
    pytest.param(doc(node("a", retry=3)), {("nodes[0].retry", "invalid_type")}, id="retry-type"),
    pytest.param(
        doc(node("a", retry={"max_attempts": 0})), {("nodes[0].retry.max_attempts", "invalid_value")}, id="attempts"
    ),
    pytest.param(
        doc(node("a", retry={"max_attempts": 2.5})),
        {("nodes[0].retry.max_attempts", "invalid_type")},
        id="attempts-float",
    ),
    pytest.param(
        doc(node("a", retry={"max_attempts": True})),
        {("nodes[0].retry.max_attempts", "invalid_type")},
        id="attempts-bool",
    ),
    pytest.param(
        doc(node("a", retry={"backoff_seconds": -1})),
        {("nodes[0].retry.backoff_seconds", "invalid_value")},
        id="backoff-negative",
    ),
    pytest.param(
        doc(node("a", retry={"multiplier": "2"})), {("nodes[0].retry.multiplier", "invalid_type")}, id="multiplier"
    ),
    pytest.param(
        doc(node("a", retry={"jitter": 1.5})), {("nodes[0].retry.jitter", "invalid_value")}, id="jitter-range"
    ),
    pytest.param(
        doc(node("a", retry={"max_backoff_seconds": float("inf")})),
        {("nodes[0].retry.max_backoff_seconds", "invalid_value")},
        id="max-backoff-inf",
    ),
    pytest.param(doc(node("a", retry={"tries": 3})), {("nodes[0].retry.tries", "unknown_key")}, id="retry-key"),
    pytest.param(doc(node("a", timeout_seconds=0)), {("nodes[0].timeout_seconds", "invalid_value")}, id="timeout-0"),
    pytest.param(
        doc(node("a", timeout_seconds="30s")), {("nodes[0].timeout_seconds", "invalid_type")}, id="timeout-str"
    ),
    pytest.param(doc(node("a", memory_mb=-1)), {("nodes[0].memory_mb", "invalid_value")}, id="memory-negative"),
    pytest.param(doc(node("a", memory_mb=1.5)), {("nodes[0].memory_mb", "invalid_value")}, id="memory-float"),
    pytest.param(doc(node("a", memory_mb=True)), {("nodes[0].memory_mb", "invalid_type")}, id="memory-bool"),
    pytest.param(doc(node("a", join="some")), {("nodes[0].join", "invalid_value")}, id="join-value"),
    pytest.param(doc(node("a", join=1)), {("nodes[0].join", "invalid_type")}, id="join-type"),
    pytest.param(
        doc(node("a", continue_on_error="yes")), {("nodes[0].continue_on_error", "invalid_type")}, id="coe-type"
    ),
    pytest.param(doc(node("a", name=1)), {("nodes[0].name", "invalid_type")}, id="node-name-type"),
    pytest.param(doc(node("a"), edges={"a": "b"}), {("edges", "invalid_type")}, id="edges-type"),
    pytest.param(doc(node("a"), edges=["a->b"]), {("edges[0]", "invalid_type")}, id="edge-not-mapping"),
    pytest.param(doc(node("a"), edges=[{"to": "a"}]), {("edges[0].from", "required")}, id="edge-from-missing"),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "c"}]), {("edges[0].to", "unknown_node")}, id="edge-to"
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": 1, "to": "b"}]), {("edges[0].from", "invalid_type")}, id="from-int"
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "if": "x"}]),
        {("edges[0].if", "unknown_key")},
        id="edge-key",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "when": "on_done"}]),
        {("edges[0].when", "invalid_value")},
        id="when-word",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "when": True}]),
        {("edges[0].when", "invalid_type")},
        id="when-bool",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "when": "{{ x"}]),
        {("edges[0].when", "template_syntax")},
        id="when-syntax",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "when": "{{ a }} {{ b }}"}]),
        {("edges[0].when", "unknown_name")},
        id="when-names",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "when": "x {{ run.id }}"}]),
        {("edges[0].when", "invalid_value")},
        id="when-not-single-expression",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b", "when": "{{ nodes.zz.status }}"}]),
        {("edges[0].when", "unknown_node")},
        id="when-unknown-node",
    ),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b"}, {"from": "a", "to": "b"}]),
        {("edges[1]", "duplicate_edge")},
        id="edge-duplicate",
    ),
    pytest.param(doc(node("a"), edges=[{"from": "a", "to": "a"}]), {("edges[0]", "cycle")}, id="self-loop"),
    pytest.param(
        doc(node("a"), node("b"), edges=[{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]),
        {("edges[0]", "cycle")},
        id="cycle",
    ),
    pytest.param(
        doc(node("a", config={"value": "{{ trigger.body"})),
        {("nodes[0].config.value", "template_syntax")},
        id="config-syntax",
    ),
    pytest.param(
        doc(node("a", config={"value": ["ok", {"deep": "{% if %}"}]})),
        {("nodes[0].config.value[1].deep", "template_syntax")},
        id="nested-syntax",
    ),
    pytest.param(
        doc(node("a", config={"value": "{% include 'x' %}"})),
        {("nodes[0].config.value", "template_syntax")},
        id="include",
    ),
    pytest.param(
        doc(node("a", input="{{ payload.x }}")), {("nodes[0].input", "unknown_name")}, id="input-unknown-name"
    ),
    pytest.param(doc(node("a"), output="{{ }}"), {("output", "template_syntax")}, id="output-syntax"),
    pytest.param(doc(node("a"), output="{{ nodes.b.output }}"), {("output", "unknown_node")}, id="output-node"),
    pytest.param(
        doc(node("a", config={"value": "{{ nodes['zz'].output }}"})),
        {("nodes[0].config.value", "unknown_node")},
        id="node-getitem",
    ),
]


@pytest.mark.parametrize(("document", "expected"), CASES)
def test_each_problem(document, expected):
    assert codes(document, FakeCatalog()) == expected


def test_many_problems_at_once():
    d = {
        "name": "",
        "nodes": [
            {"id": "Bad Id", "connector": "nope", "colour": 1},
            {"id": "b", "connector": "http", "config": {"url": "not a url", "method": "GET"}, "join": "some"},
            {"id": "b", "connector": "noop", "retry": {"max_attempts": 0}},
            {"id": "c", "connector": "noop", "config": {"value": "{{ oops"}},
        ],
        "edges": [
            {"from": "b", "to": "ghost"},
            {"from": "b", "to": "c", "when": "sometimes"},
            {"from": "c", "to": "b"},
            {"from": "b", "to": "c"},
        ],
        "output": "{{ nope }}",
    }
    found = codes(d, FakeCatalog())
    assert found == {
        ("name", "required"),
        ("nodes[0].id", "bad_id"),
        ("nodes[0].colour", "unknown_key"),
        ("nodes[0].connector", "unknown_connector"),
        ("nodes[1].config.url", "invalid_config"),
        ("nodes[1].join", "invalid_value"),
        ("nodes[2].id", "duplicate_id"),
        ("nodes[2].retry.max_attempts", "invalid_value"),
        ("nodes[3].config.value", "template_syntax"),
        ("edges[0].to", "unknown_node"),
        ("edges[1].when", "invalid_value"),
        ("edges[2]", "cycle"),
        ("output", "unknown_name"),
    }


def test_bad_ids_do_not_cascade_into_unknown_node_errors():
    d = doc(node("Bad"), node("b"), edges=[{"from": "Bad", "to": "b"}])
    assert codes(d) == {("nodes[0].id", "bad_id")}


def test_unusable_node_list_does_not_cascade_into_edge_errors():
    d = {"name": "f", "nodes": "a", "edges": [{"from": "a", "to": "b"}]}
    assert codes(d) == {("nodes", "invalid_type")}


def test_cycle_message_names_the_nodes_in_order():
    d = doc(
        node("a"),
        node("b"),
        node("c"),
        node("d"),
        edges=[
            {"from": "a", "to": "b"},
            {"from": "b", "to": "c"},
            {"from": "c", "to": "d"},
            {"from": "d", "to": "b"},
        ],
    )
    [problem] = problems(d)
    assert problem.code == "cycle" and problem.path == "edges[1]"
    assert problem.message == "cycle: b → c → d → b"


def test_each_cycle_is_reported_once():
    d = doc(
        node("a"),
        node("b"),
        node("c"),
        node("d"),
        edges=[
            {"from": "a", "to": "b"},
            {"from": "b", "to": "a"},
            {"from": "c", "to": "d"},
            {"from": "d", "to": "c"},
            {"from": "a", "to": "b", "when": "always"},
        ],
    )
    assert [(p.path, p.code) for p in problems(d)] == [("edges[0]", "cycle"), ("edges[2]", "cycle")]


def test_config_errors_become_paths_and_template_values_are_dropped():
    d = doc(
        node(
            "a",
            "http",
            config={
                "method": "{{ trigger.body.method }}",  # would fail OneOf: known only at run time
                "url": "{{ trigger.body.url }}",  # would fail Url
                "timeout_seconds": "soon",
                "headers": {"X-Num": 5, "X-Tpl": "{{ secrets.T }}"},
                "extra": 1,
            },
        ),
        node("b", "email", config={"to": ["nope", "{{ trigger.body.email }}"], "smtp": {"port": "x"}}),
    )
    found = {(p.path, p.code) for p in problems(d, FakeCatalog())}
    assert found == {
        ("nodes[0].config.timeout_seconds", "invalid_config"),
        ("nodes[0].config.headers.X-Num", "invalid_config"),
        ("nodes[0].config.extra", "invalid_config"),
        ("nodes[1].config.to[0]", "invalid_config"),
        ("nodes[1].config.smtp.host", "invalid_config"),
        ("nodes[1].config.smtp.port", "invalid_config"),
    }


def test_missing_required_config_is_reported():
    [p] = problems(doc(node("a", "http", config={})), FakeCatalog())
    assert (p.path, p.code, p.message) == ("nodes[0].config.url", "invalid_config", "Missing data for required field.")


def test_schema_level_errors_point_at_the_config():
    class SchemaCatalog(FakeCatalog):
        def validate_config(self, name, config):
            return {"_schema": ["give json or body, not both"]}

    [p] = problems(doc(node("a", "http")), SchemaCatalog())
    assert (p.path, p.code) == ("nodes[0].config", "invalid_config")


def test_a_failing_catalog_is_a_problem_not_a_crash():
    [p] = problems(doc(node("a", "http")), BrokenCatalog())
    assert p.code == "invalid_config" and "schema exploded" in p.message


def test_problem_shape():
    p = Problem("nodes[0].id", "bad_id", "msg")
    assert p.to_dict() == {"path": "nodes[0].id", "code": "bad_id", "message": "msg"}
    exc = FlowInvalid([p] * 7)
    assert "7 problems" in str(exc) and "and 2 more" in str(exc)


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("", "name", "name"),
        ("nodes", 2, "nodes[2]"),
        ("a", "b_c-d", "a.b_c-d"),
        ("a", "has space", 'a["has space"]'),
        ("a", 'q"uote', 'a["q\\"uote"]'),
        ("a", "1x", 'a["1x"]'),
    ],
)
def test_join_path(path, key, expected):
    assert join_path(path, key) == expected


def test_deeply_nested_documents_are_refused_cleanly():
    value: list = []
    for _ in range(5000):
        value = [value]
    found = problems(doc(node("a", config={"value": value})))
    assert found and all(p.code == "invalid_value" for p in found)


def test_recursive_yaml_structure_is_refused_cleanly():
    loop: list = []
    loop.append(loop)
    found = problems(doc(node("a", config={"value": loop})))
    assert found[0].code == "invalid_value"


# -------------------------------------------------------------------------------------- Flow helpers


def diamond():
    return parse_flow(
        doc(
            node("d"),
            node("b"),
            node("a"),
            node("c"),
            node("e"),
            edges=[
                {"from": "a", "to": "b"},
                {"from": "a", "to": "c", "when": "on_failure"},
                {"from": "a", "to": "c", "when": "always"},
                {"from": "b", "to": "d"},
                {"from": "c", "to": "d"},
            ],
        )
    )


def test_flow_navigation():
    f = diamond()
    assert f.roots() == ["a", "e"]
    assert [e.target for e in f.outgoing("a")] == ["b", "c", "c"]
    assert [e.source for e in f.incoming("d")] == ["b", "c"]
    assert f.predecessors("c") == ["a"]
    assert f.successors("a") == ["b", "c"]
    assert f.ancestors("d") == {"a", "b", "c"}
    assert f.incoming("ghost") == [] and f.outgoing("e") == []


def test_topological_order_breaks_ties_by_document_order():
    order = diamond().topological_order()
    assert order == ["a", "b", "c", "d", "e"]  # document order is d, b, a, c, e
    position = {n: i for i, n in enumerate(order)}
    for e in diamond().edges:
        assert position[e.source] < position[e.target]
