"""Property test of the real runtime (hub/runtime.py on SQLite, the real subprocess sandbox).

Random DAGs of ``transform`` nodes, each planned to succeed or fail, driven by a random schedule of
queue deliveries: duplicates of every message, messages for nodes that are not ready, workers that
claim an attempt and die, zombies that report after their attempt was declared lost, and reaper
passes. Whatever the schedule, every run terminates, no attempt key repeats, joins and skips follow
the rules, and late or duplicate messages change nothing once the run is over.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.db import write_transaction
from hub.engine import NODE_TERMINAL, NodeStatus, parse_flow, run_outcome
from hub.models import Attempt, Flow, FlowVersion, NodeRun, Run, RunEvent, Workspace, utcnow
from hub.runtime import Doorbell, claim_attempt, create_run, execute_node, finish_attempt, reap
from sandbox import Result

N = NodeStatus
OK = "{{ run.id }}"
FAIL = "{{ 1 // 0 }}"  # a template error: a fatal (non-retryable) failure of the node


@st.composite
def flows(draw) -> dict:
    n = draw(st.integers(1, 6))
    nodes = [
        {
            "id": f"n{i}",
            "connector": "transform",
            "config": {"value": draw(st.sampled_from([OK, OK, FAIL]))},
            "join": draw(st.sampled_from(["all", "any"])),
            "continue_on_error": draw(st.booleans()),
            "retry": {"max_attempts": draw(st.integers(1, 3)), "backoff_seconds": 0, "jitter": 0},
            "timeout_seconds": 10,
        }
        for i in range(n)
    ]
    edges = [
        {"from": f"n{i}", "to": f"n{j}", "when": draw(st.sampled_from(["on_success", "on_failure", "always"]))}
        for j in range(1, n) for i in range(j) if draw(st.integers(0, 2)) == 0
    ]
    return {"name": f"p{draw(st.integers(0, 10**9))}", "nodes": nodes, "edges": edges}


ACTIONS = ["deliver", "deliver", "deliver", "duplicate", "stray", "crash", "zombie", "reap"]
FAR = dt.timedelta(hours=1)


def _time_passes(run_id: int) -> None:
    """An hour goes by: leases expire, retries fall due, unanswered bells go stale."""
    past = utcnow() - FAR
    Attempt.update(lease_expires_at=past).where((Attempt.run == run_id) & (Attempt.status == "running")).execute()
    NodeRun.update(enqueued_at=past).where((NodeRun.run == run_id) & NodeRun.enqueued_at.is_null(False)).execute()
    NodeRun.update(due_at=past).where((NodeRun.run == run_id) & NodeRun.due_at.is_null(False)).execute()


def _statuses(run_id: int) -> dict[str, NodeStatus]:
    return {nr.node_id: N(nr.status) for nr in NodeRun.select().where(NodeRun.run == run_id)}


def _snapshot(run_id: int):
    return (Run.get_by_id(run_id).status, sorted((nr.node_id, nr.status, nr.attempts) for nr in
                                                 NodeRun.select().where(NodeRun.run == run_id)),
            Attempt.select().where(Attempt.run == run_id).count())


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=flows(), data=st.data())
def test_random_dags_with_duplicate_and_lost_messages_terminate_under_the_rules(hub, doc, data):
    cfg = hub.runtime
    flow = parse_flow(doc)
    with write_transaction():
        ws = Workspace.create(name="p")
        fv = FlowVersion.create(flow=Flow.create(workspace=ws, name=doc["name"]), version=1, document=doc)
        run, bells = create_run(fv, {"body": {}}, workspace_id=ws.id)
    queue: list[Doorbell] = list(bells)
    zombies = []
    node_ids = list(flow.nodes)

    def step(action: str) -> None:
        if action in ("deliver", "duplicate") and queue:
            i = data.draw(st.integers(0, len(queue) - 1), label="message")
            bell = queue[i] if action == "duplicate" else queue.pop(i)
            queue.extend(execute_node(bell.run_id, bell.node_id, cfg))
        elif action == "stray":  # a message for any node, whatever its state
            queue.extend(execute_node(run.id, data.draw(st.sampled_from(node_ids), label="node"), cfg))
        elif action == "crash":  # a worker claims an attempt and dies before finishing it
            claim = claim_attempt(run.id, data.draw(st.sampled_from(node_ids), label="node"), cfg)
            if claim is not None:
                zombies.append(claim)
        elif action == "zombie" and zombies:  # ...or was only slow, and reports now
            claim = zombies.pop(data.draw(st.integers(0, len(zombies) - 1), label="zombie"))
            queue.extend(finish_attempt(claim, Result(ok=True, output="late"), cfg))
        elif action == "reap":
            _time_passes(run.id)
            queue.extend(reap(cfg).bells)

    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        step(data.draw(st.sampled_from(ACTIONS), label="action"))

    # Then a healthy system: workers deliver everything, the reaper recovers what crashed.
    for _ in range(200):
        if Run.get_by_id(run.id).status in ("succeeded", "failed", "cancelled"):
            break
        if queue:
            bell = queue.pop(0)
            queue.extend(execute_node(bell.run_id, bell.node_id, cfg))
        else:
            _time_passes(run.id)
            queue.extend(reap(cfg).bells)
    else:
        raise AssertionError(f"run did not terminate: {_statuses(run.id)}")

    # Late and duplicate messages after the end change nothing.
    before = _snapshot(run.id)
    for bell in queue + [Doorbell(run.id, n) for n in node_ids]:
        execute_node(bell.run_id, bell.node_id, cfg)
    for claim in zombies:
        finish_attempt(claim, Result(ok=True, output="late"), cfg)
    _time_passes(run.id)
    reap(cfg)
    assert _snapshot(run.id) == before

    statuses = _statuses(run.id)
    final = Run.get_by_id(run.id)
    assert all(s in NODE_TERMINAL for s in statuses.values()), statuses
    assert final.status == run_outcome(flow, statuses).value

    attempts = list(Attempt.select().where(Attempt.run == run.id))
    assert len({a.key for a in attempts}) == len(attempts)
    assert all(a.status != "running" for a in attempts)
    for node_id, node in flow.nodes.items():
        mine = sorted(a.number for a in attempts if a.node_id == node_id)
        assert mine == list(range(1, len(mine) + 1)), (node_id, mine)
        assert len(mine) <= node.retry.max_attempts
        status = statuses[node_id]
        succeeded = [a for a in attempts if a.node_id == node_id and a.status == "succeeded"]
        assert len(succeeded) == (1 if status is N.SUCCEEDED else 0)
        if status is N.SUCCEEDED:
            assert node.config["value"] == OK or succeeded[0].output == "late"
        if status is N.SKIPPED:
            assert not mine
        # the join rule, checked against the predecessors' final statuses
        incoming = flow.incoming(node_id)
        if incoming:
            sat = [_satisfied(flow, e, statuses) for e in incoming]
            holds = all(sat) if node.join == "all" else any(sat)
            assert (status is not N.SKIPPED) == holds, (node_id, status, sat)

    # the event log is gap-free, in order, and ends with the run's outcome
    seqs = [e.seq for e in RunEvent.select().where(RunEvent.run == run.id).order_by(RunEvent.seq)]
    assert seqs == list(range(1, final.event_seq + 1))
    finished = [e for e in RunEvent.select().where((RunEvent.run == run.id) & (RunEvent.type == "run.finished"))]
    assert [e.data["status"] for e in finished] == [final.status]


def _satisfied(flow, edge, statuses) -> bool:
    src = statuses[edge.source]
    if src not in (N.SUCCEEDED, N.FAILED):
        return False
    if edge.when == "on_failure":
        return src is N.FAILED
    if edge.when == "always":
        return True
    return src is N.SUCCEEDED or flow.nodes[edge.source].continue_on_error
