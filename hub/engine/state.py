"""The run/node state machine: closed enums, explicit transition tables, and the DAG rules.

Everything here takes state in and gives decisions out; the runtime persists them.

Node lifecycle::

    PENDING ─► READY ─► RUNNING ─► SUCCEEDED
       │         │        │  ▲ └──► FAILED ◄── RETRYING (given up)
       │         │        ▼  │
       │         │      RETRYING ─► READY (retry due, re-queued)
       └► SKIPPED         any non-terminal ─► CANCELLED

A manual run retry resets FAILED, CANCELLED and SKIPPED nodes to PENDING/READY; SUCCEEDED is final
(its output is kept and reused).

Edge rules (used by :func:`advance`): an edge is *resolved* when its source is terminal, and
*satisfied* when

- the source was SKIPPED or CANCELLED: never;
- ``on_success``: the source SUCCEEDED, or FAILED with ``continue_on_error``;
- ``on_failure``: the source FAILED;
- ``always``: the source SUCCEEDED or FAILED;
- an expression: the source SUCCEEDED or FAILED and ``edge_ok(edge)`` is truthy (without ``edge_ok``
  an expression behaves like ``on_success``).

A node without incoming edges is READY at once. ``join: all`` → READY when every incoming edge is
resolved and satisfied, SKIPPED when every one is resolved and some is not. ``join: any`` → READY
when every incoming edge is resolved and at least one is satisfied, SKIPPED when none is.

Run outcome (:func:`run_outcome`): nothing while any node is not terminal. Then FAILED when some node
FAILED *unhandled* — it has no ``continue_on_error`` and no outgoing ``on_failure``, ``always`` or
expression edge (those edges declare that the flow deals with the failure) — else CANCELLED when any
node was CANCELLED, else SUCCEEDED (skipped nodes are a normal outcome of branching).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .flow import Edge, Flow

__all__ = [
    "NODE_TRANSITIONS",
    "RUN_TRANSITIONS",
    "Advance",
    "IllegalTransition",
    "NodeStatus",
    "RunStatus",
    "advance",
    "can_transition",
    "check_transition",
    "edge_resolved",
    "edge_satisfied",
    "failure_handled",
    "initial_statuses",
    "run_outcome",
]


class NodeStatus(StrEnum):
    PENDING = "pending"  # waiting for predecessors
    READY = "ready"  # may be claimed and run; the runtime (re)enqueues it
    RUNNING = "running"  # an attempt is claimed
    RETRYING = "retrying"  # an attempt failed retryably; the next one waits for its delay
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # will never run in this run: its join rule cannot hold
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in NODE_TERMINAL


NODE_TERMINAL = frozenset({NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED})
#: Alias spelled as in the design notes.
TERMINAL = NODE_TERMINAL


class RunStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # no new node is started; running attempts finish
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

_N = NodeStatus
#: Legal node transitions; anything else (including staying put) is illegal.
NODE_TRANSITIONS: Mapping[NodeStatus, frozenset[NodeStatus]] = {
    _N.PENDING: frozenset({_N.READY, _N.SKIPPED, _N.CANCELLED}),
    _N.READY: frozenset({_N.RUNNING, _N.CANCELLED}),
    # RUNNING → FAILED covers both a non-retryable error and an exhausted retry policy;
    # a lost attempt (expired lease) goes to RETRYING or FAILED like any failed attempt.
    _N.RUNNING: frozenset({_N.SUCCEEDED, _N.FAILED, _N.RETRYING, _N.CANCELLED}),
    # the next attempt either is claimed straight away or goes through READY to be re-queued
    _N.RETRYING: frozenset({_N.READY, _N.RUNNING, _N.FAILED, _N.CANCELLED}),
    _N.SUCCEEDED: frozenset(),
    # manual run retry only
    _N.FAILED: frozenset({_N.PENDING, _N.READY}),
    _N.SKIPPED: frozenset({_N.PENDING, _N.READY}),
    _N.CANCELLED: frozenset({_N.PENDING, _N.READY}),
}

_R = RunStatus
#: Legal run transitions.
RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    _R.RUNNING: frozenset({_R.PAUSED, _R.SUCCEEDED, _R.FAILED, _R.CANCELLED}),
    # attempts that were running when the run paused may finish it
    _R.PAUSED: frozenset({_R.RUNNING, _R.SUCCEEDED, _R.FAILED, _R.CANCELLED}),
    _R.SUCCEEDED: frozenset(),
    # manual run retry
    _R.FAILED: frozenset({_R.RUNNING}),
    _R.CANCELLED: frozenset({_R.RUNNING}),
}


class IllegalTransition(Exception):
    """A state change the rules forbid; the runtime must not persist it."""

    def __init__(self, current: NodeStatus | RunStatus, proposed: NodeStatus | RunStatus, what: str = ""):
        self.current = current
        self.proposed = proposed
        kind = "run" if isinstance(current, RunStatus) else "node"
        subject = f"{kind} {what}" if what else kind
        super().__init__(f"{subject} cannot go from {current.value} to {proposed.value}")


def can_transition(a: NodeStatus | RunStatus, b: NodeStatus | RunStatus) -> bool:
    """Whether ``a`` → ``b`` is legal; both must be NodeStatus, or both RunStatus."""
    if isinstance(a, NodeStatus) and isinstance(b, NodeStatus):
        return b in NODE_TRANSITIONS[a]
    if isinstance(a, RunStatus) and isinstance(b, RunStatus):
        return b in RUN_TRANSITIONS[a]
    raise TypeError(f"compare NodeStatus with NodeStatus or RunStatus with RunStatus, got {a!r}, {b!r}")


def can_transition_run(a: RunStatus, b: RunStatus) -> bool:
    """Run transitions, for callers that prefer an explicit name."""
    return b in RUN_TRANSITIONS[RunStatus(a)]


def check_transition(a: NodeStatus | RunStatus, b: NodeStatus | RunStatus, what: str = "") -> None:
    """Raise :class:`IllegalTransition` unless ``a`` → ``b`` is legal (``what`` names the node or run)."""
    if not can_transition(a, b):
        raise IllegalTransition(a, b, what)


# ------------------------------------------------------------------------------------------- DAG rules


def edge_resolved(edge: Edge, statuses: Mapping[str, NodeStatus]) -> bool:
    """An edge is resolved once its source is terminal."""
    return _status(statuses, edge.source) in NODE_TERMINAL


def edge_satisfied(
    flow: Flow,
    edge: Edge,
    statuses: Mapping[str, NodeStatus],
    edge_ok: Callable[[Edge], bool] | None = None,
) -> bool:
    """Whether ``edge`` lets its target run (see the module docstring for the table)."""
    source = _status(statuses, edge.source)
    if source not in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
        return False
    when = edge.when
    if when == "on_failure":
        return source is NodeStatus.FAILED
    if when == "always":
        return True
    if when != "on_success" and edge_ok is not None:
        return bool(edge_ok(edge))
    # on_success, or an expression without an evaluator
    return source is NodeStatus.SUCCEEDED or flow.nodes[edge.source].continue_on_error


def _status(statuses: Mapping[str, NodeStatus], node_id: str) -> NodeStatus:
    # a node missing from the mapping has not been touched yet
    return NodeStatus(statuses.get(node_id, NodeStatus.PENDING))


@dataclass(frozen=True)
class Advance:
    """PENDING nodes that become READY, and those that become SKIPPED (transitively), in topological order."""

    ready: list[str]
    skipped: list[str]


def advance(
    flow: Flow,
    statuses: Mapping[str, NodeStatus],
    edge_ok: Callable[[Edge], bool] | None = None,
) -> Advance:
    """Decide which PENDING nodes become READY or SKIPPED given the current statuses.

    Skips propagate in this one call: a node decided SKIPPED counts as skipped for its successors.
    ``edge_ok`` evaluates expression edges; it is called at most once per edge and only when the
    edge's source SUCCEEDED or FAILED. Nodes other than PENDING are left alone; missing ones count
    as PENDING.
    """
    current = {n: _status(statuses, n) for n in flow.nodes}
    ok_cache: dict[int, bool] = {}

    def cached_ok(edge: Edge) -> bool:
        key = id(edge)
        if key not in ok_cache:
            ok_cache[key] = bool(edge_ok(edge))  # type: ignore[misc]
        return ok_cache[key]

    checker = cached_ok if edge_ok is not None else None
    ready: list[str] = []
    skipped: list[str] = []
    for node_id in flow.topological_order():  # predecessors are decided before their successors
        if current[node_id] is not NodeStatus.PENDING:
            continue
        incoming = flow.incoming(node_id)
        if not incoming:
            ready.append(node_id)
            current[node_id] = NodeStatus.READY
            continue
        if not all(current[e.source] in NODE_TERMINAL for e in incoming):
            continue
        satisfied = [edge_satisfied(flow, e, current, checker) for e in incoming]
        go = all(satisfied) if flow.nodes[node_id].join == "all" else any(satisfied)
        if go:
            ready.append(node_id)
            current[node_id] = NodeStatus.READY
        else:
            skipped.append(node_id)
            current[node_id] = NodeStatus.SKIPPED
    return Advance(ready=ready, skipped=skipped)


def initial_statuses(flow: Flow) -> dict[str, NodeStatus]:
    """Statuses of a new run: roots READY, every other node PENDING."""
    roots = set(flow.roots())
    return {n: NodeStatus.READY if n in roots else NodeStatus.PENDING for n in flow.nodes}


def failure_handled(flow: Flow, node_id: str) -> bool:
    """Whether a FAILED ``node_id`` leaves the run able to succeed (see the module docstring)."""
    if flow.nodes[node_id].continue_on_error:
        return True
    return any(e.when != "on_success" for e in flow.outgoing(node_id))


def run_outcome(flow: Flow, statuses: Mapping[str, NodeStatus]) -> RunStatus | None:
    """The run's final status once every node is terminal, else None (rule in the module docstring)."""
    current = {n: _status(statuses, n) for n in flow.nodes}
    if any(s not in NODE_TERMINAL for s in current.values()):
        return None
    if any(s is NodeStatus.FAILED and not failure_handled(flow, n) for n, s in current.items()):
        return RunStatus.FAILED
    if any(s is NodeStatus.CANCELLED for s in current.values()):
        return RunStatus.CANCELLED
    return RunStatus.SUCCEEDED
