"""hub.tasks: the queue's storages on both backends (no revoke flags, a real message end to end) and
one message following its run's chain."""

from __future__ import annotations

import pytest

from hub import tasks
from hub.db import connection
from hub.models import NodeRun, Run
from tests.conftest import make_flow_version, start_run


def test_a_message_runs_its_node_without_revoke_flags(any_hub) -> None:
    fv = make_flow_version({"name": "one", "nodes": [{"id": "t", "connector": "transform", "config": {"value": 7}}]})
    run = start_run(fv)
    huey = any_hub.huey
    huey.storage.flush_queue()
    any_hub.tasks["execute_node"](run.id, "t")
    task = huey.dequeue()
    assert task is not None and task.args == (run.id, "t")
    assert huey.is_revoked(task) is False  # answered without a queue round trip
    with connection():
        huey.execute(task)
    assert NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == "t")).output == 7
    with pytest.raises(NotImplementedError, match="cancel the run"):
        huey.revoke(task)
    assert huey.is_revoked(task) is False


def _node(run_id: int, node_id: str) -> NodeRun:
    return NodeRun.get((NodeRun.run == run_id) & (NodeRun.node_id == node_id))


def _first_message(hub, run_id: int, node_id: str):
    hub.huey.storage.flush_queue()
    hub.tasks["execute_node"](run_id, node_id)
    task = hub.huey.dequeue()
    assert task is not None and task.args == (run_id, node_id)
    return task


def test_one_message_follows_a_chain_to_its_end(any_hub) -> None:
    fv = make_flow_version({"name": "chain", "output": "{{ nodes.c.output }}",
                            "nodes": [{"id": n, "connector": "transform", "config": {"value": i}}
                                      for i, n in enumerate("abc")],
                            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]})
    run = start_run(fv)
    task = _first_message(any_hub, run.id, "a")
    with connection():
        any_hub.huey.execute(task)
        assert any_hub.huey.storage.queue_size() == 0  # b and c never went through the queue
        assert [_node(run.id, n).status for n in "abc"] == ["succeeded"] * 3
        assert Run.get_by_id(run.id).status == "succeeded" and Run.get_by_id(run.id).output == 2


def test_a_fan_out_keeps_one_branch_and_queues_the_others(any_hub) -> None:
    fv = make_flow_version({"name": "fan",
                            "nodes": [{"id": n, "connector": "transform", "config": {"value": n}}
                                      for n in ("a", "b", "c", "d", "join")],
                            "edges": [{"from": "a", "to": n} for n in "bcd"]
                            + [{"from": n, "to": "join"} for n in "bcd"]})
    run = start_run(fv)
    task = _first_message(any_hub, run.id, "a")
    with connection():
        any_hub.huey.execute(task)
        queued = [any_hub.huey.dequeue().args for _ in range(any_hub.huey.storage.queue_size())]
        assert sorted(queued) == [(run.id, "c"), (run.id, "d")]
        assert _node(run.id, "b").status == "succeeded"
        assert [_node(run.id, n).status for n in ("c", "d", "join")] == ["ready", "ready", "pending"]


def test_a_slow_message_hands_the_next_node_to_the_queue(any_hub, monkeypatch) -> None:
    monkeypatch.setattr(tasks, "INLINE_MAX_SECONDS", 0.0)
    fv = make_flow_version({"name": "two", "nodes": [{"id": "a", "connector": "transform", "config": {"value": 1}},
                                                      {"id": "b", "connector": "transform", "config": {"value": 2}}],
                            "edges": [{"from": "a", "to": "b"}]})
    run = start_run(fv)
    task = _first_message(any_hub, run.id, "a")
    with connection():
        any_hub.huey.execute(task)
        assert any_hub.huey.dequeue().args == (run.id, "b")
        assert _node(run.id, "b").status == "ready"
