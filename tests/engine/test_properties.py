"""Property tests: random DAGs run to completion under the rules; garbage never crashes parse_flow."""

from __future__ import annotations

import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.engine import (
    NODE_TERMINAL,
    Edge,
    Flow,
    FlowInvalid,
    NodeStatus,
    Problem,
    advance,
    check_transition,
    initial_statuses,
    parse_flow,
    run_outcome,
)

N = NodeStatus
WHENS = ["on_success", "on_failure", "always", "{{ nodes.n0.output }}"]
OUTCOMES = [N.SUCCEEDED, N.FAILED, N.CANCELLED]


@st.composite
def dags(draw, max_nodes: int = 8) -> dict:
    """A flow document whose edges only go from lower to higher index, so it is acyclic."""
    n = draw(st.integers(1, max_nodes))
    nodes = [
        {
            "id": f"n{i}",
            "connector": "noop",
            "join": draw(st.sampled_from(["all", "any"])),
            "continue_on_error": draw(st.booleans()),
        }
        for i in range(n)
    ]
    edges = []
    for j in range(1, n):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                edges.append({"from": f"n{i}", "to": f"n{j}", "when": draw(st.sampled_from(WHENS))})
    return {"name": "random", "nodes": nodes, "edges": edges}


def satisfied(flow: Flow, edge: Edge, statuses: dict, verdicts: dict) -> bool:
    """The edge rule, written again independently of hub.engine.state."""
    src = statuses[edge.source]
    if src not in (N.SUCCEEDED, N.FAILED):
        return False
    if edge.when == "on_failure":
        return src is N.FAILED
    if edge.when == "always":
        return True
    if edge.when == "on_success":
        return src is N.SUCCEEDED or flow.nodes[edge.source].continue_on_error
    return verdicts[edge]


def join_holds(flow: Flow, node_id: str, statuses: dict, verdicts: dict) -> bool | None:
    """True/False once every incoming edge is resolved, None before."""
    incoming = flow.incoming(node_id)
    if not incoming:
        return True
    if any(statuses[e.source] not in NODE_TERMINAL for e in incoming):
        return None
    sats = [satisfied(flow, e, statuses, verdicts) for e in incoming]
    return all(sats) if flow.nodes[node_id].join == "all" else any(sats)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=dags(), data=st.data())
def test_random_runs_terminate_under_the_rules(doc, data):
    flow = parse_flow(doc)
    verdicts = {e: data.draw(st.booleans(), label=f"verdict {e}") for e in flow.edges if e.is_expression}
    calls: list[Edge] = []

    def edge_ok(edge: Edge) -> bool:
        calls.append(edge)
        return verdicts[edge]

    statuses = initial_statuses(flow)
    made_ready = {n for n, s in statuses.items() if s is N.READY}
    assert made_ready == set(flow.roots())

    for _ in range(4 * len(flow.nodes) + 2):
        before = dict(statuses)
        calls.clear()
        result = advance(flow, statuses, edge_ok)

        # edge_ok is only asked about expression edges whose source finished, each at most once
        assert len(calls) == len(set(calls))
        for e in calls:
            assert e.is_expression and before[e.source] in (N.SUCCEEDED, N.FAILED)

        assert not set(result.ready) & set(result.skipped)
        assert len(result.ready) == len(set(result.ready)) and len(result.skipped) == len(set(result.skipped))
        for n in [*result.ready, *result.skipped]:
            assert before[n] is N.PENDING
            check_transition(N.PENDING, N.READY if n in result.ready else N.SKIPPED)
        assert not made_ready & set(result.ready), "a node was made ready twice"
        made_ready |= set(result.ready)

        for n in result.skipped:
            statuses[n] = N.SKIPPED
        for n in result.ready:
            statuses[n] = N.READY
        # the decisions hold against the statuses they produce (skips propagate in the same call) ...
        for n in result.ready:
            assert join_holds(flow, n, statuses, verdicts) is True
        for n in result.skipped:
            assert join_holds(flow, n, statuses, verdicts) is False
        # ... and they are a fixpoint: no pending node is left decidable
        for n, s in statuses.items():
            if s is N.PENDING:
                assert join_holds(flow, n, statuses, verdicts) is None

        ready = sorted(n for n, s in statuses.items() if s is N.READY)
        if not ready:
            break
        assert run_outcome(flow, statuses) is None
        node_id = data.draw(st.sampled_from(ready), label="next node")
        outcome = data.draw(st.sampled_from(OUTCOMES), label=f"outcome of {node_id}")
        check_transition(N.READY, N.RUNNING)
        check_transition(N.RUNNING, outcome)
        statuses[node_id] = outcome
    else:
        raise AssertionError("the run did not finish")

    assert all(s in NODE_TERMINAL for s in statuses.values()), statuses
    outcome = run_outcome(flow, statuses)
    assert outcome is not None
    # a run with no failure and no cancellation always succeeds
    if all(s in (N.SUCCEEDED, N.SKIPPED) for s in statuses.values()):
        assert outcome == "succeeded"
    # the outcome rule, restated: a failure fails the run unless the flow handles it (continue_on_error,
    # or an outgoing edge other than on_success); then any cancellation cancels it
    unhandled = [n for n, s in statuses.items() if s is N.FAILED and not flow.nodes[n].continue_on_error
                 and all(e.when == "on_success" for e in flow.outgoing(n))]
    expected = "failed" if unhandled else "cancelled" if N.CANCELLED in statuses.values() else "succeeded"
    assert outcome == expected


@settings(max_examples=100, deadline=None)
@given(doc=dags(max_nodes=6), data=st.data())
def test_a_back_edge_is_always_reported_as_a_cycle(doc, data):
    n = len(doc["nodes"])
    if n < 2:
        j = 0
        doc["edges"].append({"from": "n0", "to": "n0"})
    else:
        i = data.draw(st.integers(0, n - 2))
        j = data.draw(st.integers(i + 1, n - 1))
        doc["edges"] += [
            {"from": f"n{i}", "to": f"n{j}", "when": "{{ run.flow_version }}"},
            {"from": f"n{j}", "to": f"n{i}"},
        ]
    try:
        parse_flow(doc)
    except FlowInvalid as exc:
        assert {p.code for p in exc.problems} == {"cycle"}
    else:
        raise AssertionError("cycle not detected")


# ------------------------------------------------------------------------------------------- garbage

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["{{", "{{ x }}", "{% if %}", "{{ nodes.a.output }}", "n0", "a", "http", "all", "always"])
    | st.binary(max_size=4)
    | st.dates()
    | st.datetimes()
)
garbage = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers() | st.none(), children, max_size=4)
        | st.tuples(children)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["id", "connector", "config", "retry", "join", "when", "from", "to", "input", "timeout_seconds",
     "memory_mb", "continue_on_error", "max_attempts", "jitter", "output", "name", "nodes", "edges"]
)  # fmt: skip
shaped = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)


class AnyCatalog:
    def exists(self, name: str) -> bool:
        return len(name) % 2 == 0

    def validate_config(self, name: str, config: dict) -> dict:
        return {k: ["bad"] for k in list(config)[:2]} | {"_schema": ["whole"], "x": {0: {"y": ["deep"]}}}


@settings(max_examples=400, deadline=None)
@given(doc=garbage | shaped | st.fixed_dictionaries({"name": scalars, "nodes": shaped, "edges": shaped}))
def test_garbage_only_ever_raises_flow_invalid(doc):
    for catalog in (None, AnyCatalog()):
        try:
            flow = parse_flow(doc, catalog)
        except FlowInvalid as exc:
            assert exc.problems
            for p in exc.problems:
                assert isinstance(p, Problem) and isinstance(p.path, str) and p.code and p.message
        else:
            assert isinstance(flow, Flow) and flow.topological_order()


@settings(max_examples=200, deadline=None)
@given(doc=dags(), data=st.data())
def test_corrupting_one_field_of_a_valid_flow(doc, data):
    node = data.draw(st.sampled_from(doc["nodes"]))
    key = data.draw(keys)
    node[key] = data.draw(garbage)
    try:
        parse_flow(doc)
    except FlowInvalid as exc:
        assert all(p.path for p in exc.problems)


def test_yaml_dates_are_reported_not_crashing():
    doc = {"name": "x", "nodes": [{"id": "a", "connector": "c", "input": datetime.date(2024, 1, 1)}]}
    try:
        parse_flow(doc)
    except FlowInvalid as exc:
        assert [(p.path, p.code) for p in exc.problems] == [("nodes[0].input", "invalid_type")]
