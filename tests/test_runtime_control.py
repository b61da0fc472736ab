"""Run control, dead letters, version pinning and durable retries: the runtime on real databases."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from hub.config import load_settings
from hub.core import Hub
from hub.db import connection, write_transaction
from hub.engine import idempotency_key
from hub.models import Attempt, DeadLetter, Flow, FlowVersion, NodeRun, Run, RunEvent, utcnow
from hub.runtime import (
    ControlError,
    Doorbell,
    cancel_run,
    claim_attempt,
    create_run,
    execute_node,
    finish_attempt,
    pause_run,
    reap,
    redrive_dead_letter,
    resume_run,
    retry_run,
)
from hub.services.flows import update_flow
from sandbox import Result
from tests.conftest import make_flow_version, start_run


def _statuses(run_id: int) -> dict[str, str]:
    return {n.node_id: n.status for n in NodeRun.select().where(NodeRun.run == run_id)}


def _drain(run_id: int, hub, bells=None, limit: int = 50) -> None:
    """Deliver bells (ignoring ETAs) until there are none: a worker in the test's own thread."""
    if bells is None:
        ready = NodeRun.select().where((NodeRun.run == run_id) & (NodeRun.status == "ready"))
        bells = [Doorbell(run_id, n.node_id) for n in ready]
    queue = list(bells)
    for _ in range(limit):
        if not queue:
            return
        bell = queue.pop(0)
        NodeRun.update(due_at=utcnow()).where((NodeRun.run == bell.run_id) & (NodeRun.node_id == bell.node_id)
                                              & (NodeRun.status == "retrying")).execute()
        queue.extend(execute_node(bell.run_id, bell.node_id, hub.runtime))
    raise AssertionError("too many deliveries")


def chain(sink_url: str, **b) -> dict:
    return {
        "name": "chain",
        "output": "{{ nodes.c.output.body }}",
        "nodes": [
            {"id": "a", "connector": "http", "config": {"url": f"{sink_url}/a"}},
            {"id": "b", "connector": "http", "config": {"url": f"{sink_url}/b"}, **b},
            {"id": "c", "connector": "http", "config": {"url": f"{sink_url}/c"}},
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    }


def _types(run_id: int) -> list[str]:
    return [e.type for e in RunEvent.select().where(RunEvent.run == run_id).order_by(RunEvent.seq)]


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_kills_the_running_sandbox_and_its_late_result_changes_nothing(any_hub, sink):
    sink.respond("/a", (200, {"slow": True}, 20))
    run = start_run(make_flow_version(chain(sink.url)))
    done: list = []

    def work():
        with connection():
            done.append(execute_node(run.id, "a", any_hub.runtime))

    worker = threading.Thread(target=work)
    started = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 30
    while not sink.hits("/a"):
        assert time.monotonic() < deadline, "the attempt never reached the sink"
        time.sleep(0.05)
    cancelled = cancel_run(run.id, actor="user:1")
    assert cancelled.status == "cancelled"
    assert _statuses(run.id) == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    worker.join(timeout=30)
    assert not worker.is_alive()
    # the sink answers after 20 s: the worker came back long before, so its sandbox was killed
    assert time.monotonic() - started < 15
    assert done == [[]]
    run = Run.get_by_id(run.id)
    assert run.status == "cancelled" and run.finished_at is not None
    assert [a.status for a in Attempt.select().where(Attempt.run == run.id)] == ["cancelled"]
    assert _statuses(run.id) == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    types = _types(run.id)
    assert types[-1] == "attempt.late_result"
    assert {"run.cancel_requested", "attempt.cancelled", "node.cancelled", "run.finished"} <= set(types)
    # nothing claims a node of a cancelled run, and a second cancel is refused
    assert execute_node(run.id, "b", any_hub.runtime) == []
    with pytest.raises(ControlError) as exc:
        cancel_run(run.id)
    assert exc.value.code == "run_finished"
    assert sink.hits("/b") == []


# --- pause and resume ------------------------------------------------------------------------------


def test_pause_lets_running_attempts_finish_but_starts_nothing_until_resumed(any_hub, sink):
    run = start_run(make_flow_version(chain(sink.url)))
    claim = claim_attempt(run.id, "a", any_hub.runtime)
    assert claim is not None
    assert pause_run(run.id).status == "paused"
    with pytest.raises(ControlError) as exc:
        pause_run(run.id)
    assert exc.value.code == "run_not_running"
    # the running attempt finishes and is recorded; b becomes ready but nobody is asked to run it
    assert finish_attempt(claim, Result(ok=True, output={"x": 1}), any_hub.runtime) == []
    assert _statuses(run.id)["b"] == "ready"
    assert execute_node(run.id, "b", any_hub.runtime) == []  # a stray bell while paused
    assert sink.hits("/b") == []
    # the reaper leaves paused runs alone too
    assert reap(any_hub.runtime, now=utcnow() + dt.timedelta(minutes=5)).bells == []

    resumed, bells = resume_run(run.id)
    assert resumed.status == "running"
    assert [(b.node_id, b.eta) for b in bells] == [("b", None)]
    _drain(run.id, any_hub, bells)
    assert Run.get_by_id(run.id).status == "succeeded"
    assert len(sink.hits("/b")) == 1 and len(sink.hits("/c")) == 1
    with pytest.raises(ControlError) as exc:
        resume_run(run.id)
    assert exc.value.code == "run_not_paused"
    assert {"run.paused", "run.resumed"} <= set(_types(run.id))


def test_resume_keeps_a_waiting_retry_at_its_due_time(hub, sink):
    sink.respond("/a", (503, {}), (200, {}))
    run = start_run(make_flow_version({"name": "wait", "nodes": [
        {"id": "a", "connector": "http", "config": {"url": f"{sink.url}/a"},
         "retry": {"max_attempts": 2, "backoff_seconds": 60, "jitter": 0}}]}))
    execute_node(run.id, "a", hub.runtime)
    assert _statuses(run.id) == {"a": "retrying"}
    pause_run(run.id)
    _, bells = resume_run(run.id)
    assert len(bells) == 1 and bells[0].eta is not None and bells[0].eta > utcnow() + dt.timedelta(seconds=50)


# --- retry from failed -----------------------------------------------------------------------------


def test_retry_reruns_failed_and_skipped_nodes_under_the_same_run_keeping_outputs(any_hub, sink):
    sink.respond("/b", (404, {"no": 1}), (200, {"yes": 1}))
    run = start_run(make_flow_version(chain(sink.url)))
    _drain(run.id, any_hub)
    assert Run.get_by_id(run.id).status == "failed"
    assert _statuses(run.id) == {"a": "succeeded", "b": "failed", "c": "skipped"}
    a_output = NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == "a")).output

    retried, bells = retry_run(run.id, actor="user:1")
    assert retried.id == run.id and retried.status == "running" and retried.error is None
    assert [b.node_id for b in bells] == ["b"]
    assert _statuses(run.id) == {"a": "succeeded", "b": "ready", "c": "pending"}
    _drain(run.id, any_hub, bells)
    run = Run.get_by_id(run.id)
    assert run.status == "succeeded" and run.output == {"ok": True, "path": "/c"}
    assert len(sink.hits("/a")) == 1, "a succeeded before: it must not run again"
    assert NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == "a")).output == a_output
    b_attempts = list(Attempt.select().where((Attempt.run == run.id) & (Attempt.node_id == "b"))
                      .order_by(Attempt.number))
    assert [(a.number, a.status) for a in b_attempts] == [(1, "failed"), (2, "succeeded")]
    assert [h.headers["Idempotency-Key"] for h in sink.hits("/b")] == [
        idempotency_key(run.id, "b", 1), idempotency_key(run.id, "b", 2)]
    with pytest.raises(ControlError) as exc:
        retry_run(run.id)
    assert exc.value.code == "run_succeeded"


def test_a_retried_node_gets_its_retry_policy_afresh(hub, sink):
    sink.respond("/b", (503, {}), (503, {}), (503, {}), (200, {}))
    run = start_run(make_flow_version(chain(sink.url, retry={"max_attempts": 2, "backoff_seconds": 0})))
    _drain(run.id, hub)
    assert _statuses(run.id)["b"] == "failed"
    _, bells = retry_run(run.id)
    _drain(run.id, hub, bells)
    # attempts 3 (retryable failure, so a 4th is allowed by the fresh policy) and 4 (succeeds)
    assert Run.get_by_id(run.id).status == "succeeded"
    assert [a.status for a in Attempt.select().where(Attempt.node_id == "b").order_by(Attempt.number)] == [
        "failed", "failed", "failed", "succeeded"]


def test_retry_of_a_cancelled_run_reruns_the_cancelled_nodes(hub, sink):
    run = start_run(make_flow_version(chain(sink.url)))
    execute_node(run.id, "a", hub.runtime)  # a succeeds; b is ready when the run is cancelled
    cancel_run(run.id)
    assert _statuses(run.id) == {"a": "succeeded", "b": "cancelled", "c": "cancelled"}
    assert Run.get_by_id(run.id).status == "cancelled"
    _, bells = retry_run(run.id)
    _drain(run.id, hub, bells)
    assert Run.get_by_id(run.id).status == "succeeded"
    assert len(sink.hits("/a")) == 1


def test_retry_refuses_what_it_cannot_do(hub, sink):
    run = start_run(make_flow_version(chain(sink.url)))
    for call, code in [(lambda: retry_run(run.id), "run_not_finished"),
                       (lambda: retry_run(10_000), "run_not_found")]:
        with pytest.raises(ControlError) as exc:
            call()
        assert exc.value.code == code
    sink.respond("/a", (400, {}))
    _drain(run.id, hub)
    with pytest.raises(ControlError) as exc:
        retry_run(run.id, ["nope"])
    assert exc.value.code == "node_not_found"
    with pytest.raises(ControlError) as exc:
        retry_run(run.id, ["c"])  # skipped, not failed
    assert exc.value.code == "node_not_failed"


# --- dead letters ----------------------------------------------------------------------------------


def test_exhausted_node_is_dead_lettered_and_redrive_runs_it_again(any_hub, sink):
    sink.respond("/b", (503, {}), (503, {}), (200, {"finally": True}))
    run = start_run(make_flow_version(chain(sink.url, retry={"max_attempts": 2, "backoff_seconds": 0})))
    _drain(run.id, any_hub)
    assert Run.get_by_id(run.id).status == "failed"
    letters = list(DeadLetter.select())
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.run_id, letter.node_id, letter.attempts, letter.status) == (run.id, "b", 2, "open")
    assert letter.error["kind"] == "connector" or letter.error["retryable"] is True
    assert "node.dead_lettered" in _types(run.id)

    redriven, bells = redrive_dead_letter(letter.id, actor="user:1")
    assert redriven.status == "redriven" and redriven.redriven_at is not None
    _drain(run.id, any_hub, bells)
    assert Run.get_by_id(run.id).status == "succeeded"
    assert _statuses(run.id) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    assert len(sink.hits("/a")) == 1 and len(sink.hits("/b")) == 3 and len(sink.hits("/c")) == 1
    with pytest.raises(ControlError) as exc:
        redrive_dead_letter(letter.id)
    assert exc.value.code == "dead_letter_redriven"


def test_a_node_that_fails_again_after_redrive_gets_a_new_dead_letter(hub, sink):
    sink.respond("/b", (400, {}))
    run = start_run(make_flow_version(chain(sink.url)))
    _drain(run.id, hub)
    first = DeadLetter.get()
    _, bells = redrive_dead_letter(first.id)
    _drain(run.id, hub, bells)
    assert Run.get_by_id(run.id).status == "failed"
    assert [(d.status, d.attempts) for d in DeadLetter.select().order_by(DeadLetter.id)] == [
        ("redriven", 1), ("open", 2)]


# --- versions --------------------------------------------------------------------------------------


def test_a_run_keeps_executing_the_version_it_started_on(any_hub, sink):
    v1 = chain(sink.url)
    fv = make_flow_version(v1)
    run = start_run(fv)
    execute_node(run.id, "a", any_hub.runtime)
    v2 = chain(sink.url)
    v2["nodes"][1]["config"]["url"] = f"{sink.url}/b-v2"
    flow = update_flow(Flow.get_by_id(fv.flow_id), v2, any_hub.registry)
    assert flow.latest_version == 2
    _drain(run.id, any_hub)
    assert Run.get_by_id(run.id).status == "succeeded" and Run.get_by_id(run.id).flow_version == 1
    assert len(sink.hits("/b")) == 1 and sink.hits("/b-v2") == []
    # a new run follows the latest version
    with write_transaction():
        run2, bells = create_run(FlowVersion.get((FlowVersion.flow == fv.flow_id) & (FlowVersion.version == 2)),
                                 {}, workspace_id=fv.flow.workspace_id)
    _drain(run2.id, any_hub, bells)
    assert len(sink.hits("/b-v2")) == 1


# --- retries survive a restart ---------------------------------------------------------------------


def test_a_waiting_retry_survives_a_restart_with_an_empty_queue(backend, sink):
    """The due time is a row: a fresh process with nothing in its queue still runs the retry."""
    settings = load_settings(dict(backend.env), dotenv=False)
    from hub.migrate import migrate

    first = Hub(settings)
    migrate(settings.data_dir / "migrate.lock")
    sink.respond("/a", (503, {}, 0), (200, {"second": True}))
    with connection():
        run = start_run(make_flow_version({"name": "r", "nodes": [
            {"id": "a", "connector": "http", "config": {"url": f"{sink.url}/a"},
             "retry": {"max_attempts": 3, "backoff_seconds": 1, "jitter": 0}}]}))
        bells = execute_node(run.id, "a", first.runtime)
        assert len(bells) == 1 and bells[0].eta is not None  # ...and then the process died
    first.huey.flush()  # whatever was queued or scheduled is gone too
    first.close()

    second = Hub(settings)
    try:
        with connection():
            assert reap(second.runtime).bells == []  # not due yet
            due = NodeRun.get(NodeRun.run == run.id).due_at
            later = due + dt.timedelta(seconds=settings.requeue_after_seconds + 0.1)
            time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.05)  # the retry is due
            report = reap(second.runtime, now=later)
            assert [(b.run_id, b.node_id) for b in report.bells] == [(run.id, "a")]
            execute_node(run.id, "a", second.runtime)
            assert Run.get_by_id(run.id).status == "succeeded"
            assert [a.status for a in Attempt.select().where(Attempt.run == run.id).order_by(Attempt.number)] == [
                "failed", "succeeded"]
    finally:
        second.close()


# --- the flow format, end to end through the runtime -----------------------------------------------


def test_expression_edges_join_any_skip_propagation_and_output(hub, sink):
    sink.respond("/bad", (400, {"no": True}))
    doc = {
        "name": "branches",
        "output": {"picked": "{{ nodes.pick.output }}", "handled": "{{ nodes.handler.status }}"},
        "nodes": [
            {"id": "n", "connector": "transform", "config": {"value": "{{ trigger.body.n }}"}},
            {"id": "big", "connector": "transform", "config": {"value": "big"}},
            {"id": "small", "connector": "transform", "config": {"value": "small"}},
            {"id": "after_small", "connector": "transform", "config": {"value": 1}},
            {"id": "pick", "connector": "transform", "join": "any",
             "config": {"value": "{{ nodes.big.output or nodes.small.output }}"}},
            {"id": "bad", "connector": "http", "config": {"url": f"{sink.url}/bad"}},
            {"id": "handler", "connector": "transform", "config": {"value": "{{ nodes.bad.error.message }}"}},
        ],
        "edges": [
            {"from": "n", "to": "big", "when": "{{ nodes.n.output > 10 }}"},
            {"from": "n", "to": "small", "when": "{{ nodes.n.output <= 10 }}"},
            {"from": "small", "to": "after_small"},
            {"from": "big", "to": "pick"}, {"from": "small", "to": "pick"},
            {"from": "bad", "to": "handler", "when": "on_failure"},
        ],
    }
    run = start_run(make_flow_version(doc), body={"n": 42})
    _drain(run.id, hub)
    run = Run.get_by_id(run.id)
    assert _statuses(run.id) == {"n": "succeeded", "big": "succeeded", "small": "skipped",
                                 "after_small": "skipped", "pick": "succeeded", "bad": "failed",
                                 "handler": "succeeded"}
    # bad's failure is handled by an on_failure edge, so the run succeeds; its output is typed
    assert run.status == "succeeded"
    assert run.output == {"picked": "big", "handled": "succeeded"}


def test_a_node_timeout_reaches_the_sandbox(hub, sink):
    sink.respond("/slow", (200, {}, 10))
    run = start_run(make_flow_version({"name": "t", "nodes": [
        {"id": "slow", "connector": "http", "config": {"url": f"{sink.url}/slow"}, "timeout_seconds": 1,
         "retry": {"max_attempts": 1}}]}))
    started = time.monotonic()
    execute_node(run.id, "slow", hub.runtime)
    assert time.monotonic() - started < 8
    node = NodeRun.get(NodeRun.run == run.id)
    assert node.status == "failed" and node.error["kind"] == "timeout" and node.error["retryable"] is True
