"""State machine: transition tables as (initial, proposed) pairs; advance() joins/skips; run outcomes."""

from __future__ import annotations

import itertools

import pytest

from hub.engine import (
    Edge,
    IllegalTransition,
    NodeStatus,
    RunStatus,
    advance,
    can_transition,
    check_transition,
    initial_statuses,
    parse_flow,
    run_outcome,
)
from hub.engine.state import NODE_TERMINAL, can_transition_run, edge_satisfied, failure_handled

N = NodeStatus
R = RunStatus
P, RD, RUN, RT, OK, F, S, C = (
    N.PENDING,
    N.READY,
    N.RUNNING,
    N.RETRYING,
    N.SUCCEEDED,
    N.FAILED,
    N.SKIPPED,
    N.CANCELLED,
)

# written out independently of the implementation's table, on purpose
LEGAL_NODE = {
    (P, RD), (P, S), (P, C),
    (RD, RUN), (RD, C),
    (RUN, OK), (RUN, F), (RUN, RT), (RUN, C),
    (RT, RD), (RT, RUN), (RT, F), (RT, C),
    (F, P), (F, RD), (S, P), (S, RD), (C, P), (C, RD),
}  # fmt: skip
LEGAL_RUN = {
    (R.RUNNING, R.PAUSED), (R.RUNNING, R.SUCCEEDED), (R.RUNNING, R.FAILED), (R.RUNNING, R.CANCELLED),
    (R.PAUSED, R.RUNNING), (R.PAUSED, R.SUCCEEDED), (R.PAUSED, R.FAILED), (R.PAUSED, R.CANCELLED),
    (R.FAILED, R.RUNNING), (R.CANCELLED, R.RUNNING),
}  # fmt: skip


def test_enum_values_are_lowercase_and_closed():
    assert [s.value for s in N] == [
        "pending", "ready", "running", "retrying", "succeeded", "failed", "skipped", "cancelled",
    ]  # fmt: skip
    assert [s.value for s in R] == ["running", "paused", "succeeded", "failed", "cancelled"]
    assert N("failed") is F and R("paused") is R.PAUSED
    assert {OK, F, S, C} == NODE_TERMINAL
    assert [s for s in N if s.terminal] == [OK, F, S, C]
    assert [s for s in R if s.terminal] == [R.SUCCEEDED, R.FAILED, R.CANCELLED]


@pytest.mark.parametrize(("initial", "proposed"), list(itertools.product(N, N)), ids=str)
def test_node_transitions(initial, proposed):
    legal = (initial, proposed) in LEGAL_NODE
    assert can_transition(initial, proposed) is legal
    if legal:
        check_transition(initial, proposed)
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(initial, proposed, "fetch")
        assert info.value.current is initial and info.value.proposed is proposed
        assert f"node fetch cannot go from {initial} to {proposed}" == str(info.value)


@pytest.mark.parametrize(("initial", "proposed"), list(itertools.product(R, R)), ids=str)
def test_run_transitions(initial, proposed):
    legal = (initial, proposed) in LEGAL_RUN
    assert can_transition(initial, proposed) is legal
    assert can_transition_run(initial, proposed) is legal
    if not legal:
        with pytest.raises(IllegalTransition, match="^run cannot go"):
            check_transition(initial, proposed)


def test_succeeded_is_final():
    assert not any(can_transition(OK, b) for b in N)
    assert not any(can_transition(R.SUCCEEDED, b) for b in R)


def test_mixing_node_and_run_statuses_is_a_type_error():
    with pytest.raises(TypeError):
        can_transition(N.RUNNING, R.RUNNING)
    with pytest.raises(TypeError):
        can_transition("running", "failed")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- advance


def flow(nodes: list, edges: list = ()):  # nodes: ids or (id, extra) pairs
    docs = []
    for n in nodes:
        node_id, extra = (n, {}) if isinstance(n, str) else n
        docs.append({"id": node_id, "connector": "noop", **extra})
    return parse_flow({"name": "t", "nodes": docs, "edges": [{"from": s, "to": t, "when": w} for s, t, w in edges]})


def chain(when="on_success", **source_extra):
    return flow([("a", source_extra), "b"], [("a", "b", when)])


def test_initial_statuses_and_advance_from_nothing():
    f = flow(["a", "b", "c"], [("a", "c", "on_success")])
    assert initial_statuses(f) == {"a": RD, "b": RD, "c": P}
    assert advance(f, {}) == advance(f, {n: P for n in f.nodes})
    result = advance(f, {})
    assert result.ready == ["a", "b"] and result.skipped == []


# (when, continue_on_error, source status) → target READY (True), SKIPPED (False), or undecided (None)
EDGE_TABLE = [
    ("on_success", False, OK, True),
    ("on_success", False, F, False),
    ("on_success", True, F, True),
    ("on_success", False, S, False),
    ("on_success", False, C, False),
    ("on_success", True, S, False),
    ("on_failure", False, OK, False),
    ("on_failure", False, F, True),
    ("on_failure", True, F, True),
    ("on_failure", False, S, False),
    ("on_failure", False, C, False),
    ("always", False, OK, True),
    ("always", False, F, True),
    ("always", False, S, False),
    ("always", False, C, False),
    ("on_success", False, P, None),
    ("on_success", False, RD, None),
    ("on_success", False, RUN, None),
    ("always", False, RT, None),
]


@pytest.mark.parametrize(("when", "coe", "source", "expected"), EDGE_TABLE)
def test_single_edge(when, coe, source, expected):
    f = chain(when, continue_on_error=coe)
    result = advance(f, {"a": source, "b": P})
    assert ("b" in result.ready) is (expected is True)
    assert ("b" in result.skipped) is (expected is False)


@pytest.mark.parametrize(
    ("source", "verdict", "expected"),
    [(OK, True, True), (OK, False, False), (F, True, True), (F, False, False), (S, True, False), (C, True, False)],
)
def test_expression_edges_ask_edge_ok_only_for_finished_sources(source, verdict, expected):
    f = chain("{{ nodes.a.output.ok }}")
    calls = []

    def edge_ok(edge: Edge) -> bool:
        calls.append(edge)
        return verdict

    result = advance(f, {"a": source}, edge_ok)
    assert result.ready == (["b"] if expected else []) and result.skipped == ([] if expected else ["b"])
    assert calls == ([f.edges[0]] if source in (OK, F) else [])


@pytest.mark.parametrize(("source", "coe", "expected"), [(OK, False, True), (F, False, False), (F, True, True)])
def test_expression_edges_without_edge_ok_act_like_on_success(source, coe, expected):
    f = chain("{{ true }}", continue_on_error=coe)
    assert advance(f, {"a": source}).ready == (["b"] if expected else [])


def test_edge_ok_is_called_once_per_edge():
    f = flow(["a", "b", "c"], [("a", "b", "{{ 1 }}"), ("b", "c", "on_success")])
    calls = []
    advance(f, {"a": OK}, lambda e: calls.append(e) or True)
    assert len(calls) == 1


def test_edge_ok_not_called_for_keyword_edges():
    f = flow(["a", "b"], [("a", "b", "always")])
    assert advance(f, {"a": OK}, lambda e: pytest.fail("called")).ready == ["b"]


def joined(join: str):
    return flow(["x", "y", ("z", {"join": join})], [("x", "z", "on_success"), ("y", "z", "on_success")])


@pytest.mark.parametrize(
    ("join", "x", "y", "expected"),
    [
        ("all", OK, OK, "ready"),
        ("all", OK, F, "skipped"),
        ("all", OK, RUN, None),
        ("all", F, RUN, None),  # waits for every edge to resolve even when the outcome is clear
        ("all", S, S, "skipped"),
        ("any", OK, RUN, None),  # "any" still waits for all predecessors
        ("any", OK, F, "ready"),
        ("any", F, S, "skipped"),
        ("any", F, F, "skipped"),
        ("any", C, OK, "ready"),
        ("any", S, S, "skipped"),
    ],
)
def test_joins(join, x, y, expected):
    result = advance(joined(join), {"x": x, "y": y, "z": P})
    assert result.ready == (["z"] if expected == "ready" else [])
    assert result.skipped == (["z"] if expected == "skipped" else [])


def test_skips_propagate_transitively_in_one_call():
    f = flow(
        ["a", "b", "c", "d", ("e", {"join": "any"}), "f"],
        [
            ("a", "b", "on_success"),
            ("b", "c", "always"),
            ("c", "d", "on_failure"),
            ("d", "e", "on_success"),
            ("a", "e", "on_failure"),
            ("e", "f", "on_success"),
        ],
    )
    result = advance(f, {"a": F})
    assert result.skipped == ["b", "c", "d"]
    assert result.ready == ["e"]  # "any": a's on_failure edge holds although d was skipped
    result = advance(f, {"a": OK})
    assert result.ready == ["b"] and result.skipped == []


def test_failure_branch():
    f = flow(["a", "ok", "alert"], [("a", "ok", "on_success"), ("a", "alert", "on_failure")])
    assert advance(f, {"a": F}) == type(advance(f, {}))(ready=["alert"], skipped=["ok"])
    assert advance(f, {"a": OK}).ready == ["ok"] and advance(f, {"a": OK}).skipped == ["alert"]


def test_non_pending_nodes_are_left_alone():
    f = chain()
    for status in N:
        if status is not P:
            assert advance(f, {"a": OK, "b": status}) == type(advance(f, {}))(ready=[], skipped=[])
    assert advance(f, {"a": RD, "b": P}).ready == []  # roots already READY are not re-announced


def test_multiple_edges_between_the_same_nodes():
    f = flow(["a", ("b", {"join": "any"})], [("a", "b", "on_success"), ("a", "b", "on_failure")])
    assert advance(f, {"a": F}).ready == ["b"] and advance(f, {"a": OK}).ready == ["b"]
    f = flow(["a", "b"], [("a", "b", "on_success"), ("a", "b", "on_failure")])
    assert advance(f, {"a": F}).skipped == ["b"] and advance(f, {"a": OK}).skipped == ["b"]


def test_edge_satisfied_directly():
    f = chain("on_success", continue_on_error=True)
    assert edge_satisfied(f, f.edges[0], {"a": F}) is True
    assert edge_satisfied(f, f.edges[0], {"a": RUN}) is False


# ---------------------------------------------------------------------------------------- run_outcome


@pytest.mark.parametrize(
    ("when", "coe", "a", "b", "expected"),
    [
        ("on_success", False, OK, OK, R.SUCCEEDED),
        ("on_success", False, F, S, R.FAILED),
        ("on_success", True, F, OK, R.SUCCEEDED),  # continue_on_error handles the failure
        ("on_failure", False, F, OK, R.SUCCEEDED),  # an on_failure edge handles it
        ("on_failure", False, F, F, R.FAILED),  # the handler itself failed unhandled
        ("always", False, F, OK, R.SUCCEEDED),
        ("{{ run.id }}", False, F, S, R.SUCCEEDED),  # an expression edge handles it too
        ("on_failure", False, OK, S, R.SUCCEEDED),  # skipped branches are normal
        ("on_success", False, C, S, R.CANCELLED),
        ("on_failure", False, F, C, R.CANCELLED),
        ("on_success", False, OK, RUN, None),
        ("on_success", False, OK, P, None),
        ("on_success", False, RT, P, None),
        ("on_success", False, OK, RD, None),
    ],
)
def test_run_outcome(when, coe, a, b, expected):
    assert run_outcome(chain(when, continue_on_error=coe), {"a": a, "b": b}) is expected


def test_unhandled_failure_beats_cancellation():
    f = flow(["a", "b"])
    assert run_outcome(f, {"a": F, "b": C}) is R.FAILED
    assert run_outcome(f, {"a": OK, "b": C}) is R.CANCELLED


def test_missing_statuses_mean_not_finished():
    assert run_outcome(chain(), {"a": OK}) is None


def test_failure_handled():
    f = flow(["a", ("b", {"continue_on_error": True}), "c"], [("a", "c", "always")])
    assert failure_handled(f, "a") and failure_handled(f, "b") and not failure_handled(f, "c")
