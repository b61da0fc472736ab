"""The durable runtime against real databases and the real subprocess sandbox."""

from __future__ import annotations

import datetime as dt
import threading
import time

from hub.db import connection
from hub.engine import idempotency_key
from hub.models import Attempt, NodeRun, Run, RunEvent, utcnow
from hub.runtime import Doorbell, claim_attempt, execute_node, pause_run, reap, resume_run
from tests.conftest import make_flow_version, start_run


def one_call(sink_url: str, **node) -> dict:
    return {"name": "one", "nodes": [{"id": "call", "connector": "http",
                                      "config": {"method": "POST", "url": f"{sink_url}/call"}, **node}]}


def test_the_same_message_twice_runs_the_connector_once(any_hub, sink):
    run = start_run(make_flow_version(one_call(sink.url)))
    assert execute_node(run.id, "call", any_hub.runtime) == []
    assert execute_node(run.id, "call", any_hub.runtime) == []
    assert len(sink.hits("/call")) == 1
    assert Run.get_by_id(run.id).status == "succeeded"
    assert [a.key for a in Attempt.select()] == [idempotency_key(run.id, "call", 1)]


def test_concurrent_duplicate_messages_run_the_connector_once(any_hub, sink):
    sink.respond("/call", (200, {"ok": True}, 0.2))
    run = start_run(make_flow_version(one_call(sink.url)))

    def deliver():
        with connection():
            execute_node(run.id, "call", any_hub.runtime)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sink.hits("/call")) == 1
    assert Attempt.select().count() == 1


def test_a_claimed_key_is_never_claimed_again(any_hub, sink):
    run = start_run(make_flow_version(one_call(sink.url)))
    node_run = NodeRun.get(NodeRun.node_id == "call")
    # Someone else holds attempt 1 already (its row exists), although the node still looks ready.
    Attempt.create(key=idempotency_key(run.id, "call", 1), node_run=node_run, run=run, node_id="call",
                   number=1, status="running", lease_expires_at=utcnow() + dt.timedelta(minutes=5))
    assert claim_attempt(run.id, "call", any_hub.runtime) is None
    assert sink.hits("/call") == []


def test_a_claim_on_a_run_that_is_not_running_leaves_nothing_behind(any_hub, sink):
    # The claim locks the run last: its attempt insert must be undone when the run turns out paused.
    run = start_run(make_flow_version(one_call(sink.url)))
    pause_run(run.id)
    assert claim_attempt(run.id, "call", any_hub.runtime) is None
    assert Attempt.select().count() == 0
    assert NodeRun.get(NodeRun.node_id == "call").status == "ready"
    resume_run(run.id)
    claim = claim_attempt(run.id, "call", any_hub.runtime)
    assert claim is not None and claim.attempt.number == 1
    seqs = [e.seq for e in RunEvent.select().where(RunEvent.run == run.id).order_by(RunEvent.seq)]
    assert seqs == list(range(1, len(seqs) + 1))  # the rolled-back claim gave its number back
    assert sink.hits("/call") == []


def test_reaper_rings_again_for_a_ready_node_nobody_picked_up(hub, sink):
    run = start_run(make_flow_version(one_call(sink.url)))
    # The bell rung at creation was lost; nothing happens until the requeue window has passed.
    assert reap(hub.runtime).bells == []
    later = utcnow() + dt.timedelta(seconds=hub.settings.requeue_after_seconds + 1)
    report = reap(hub.runtime, now=later)
    assert [(b.run_id, b.node_id) for b in report.bells] == [(run.id, "call")]
    # a second reaper in the same pass finds nothing more to do
    assert reap(hub.runtime, now=later).bells == []


def test_expired_lease_counts_as_a_lost_attempt_and_retries(any_hub, sink):
    doc = one_call(sink.url, retry={"max_attempts": 2, "backoff_seconds": 0}, timeout_seconds=1)
    run = start_run(make_flow_version(doc))
    claim = claim_attempt(run.id, "call", any_hub.runtime)
    assert claim is not None  # ...and then its worker died before finishing
    assert reap(any_hub.runtime).lost == 0  # the lease is the node's timeout plus a grace period
    time.sleep(max(0.0, (claim.attempt.lease_expires_at - utcnow()).total_seconds()) + 0.05)
    report = reap(any_hub.runtime)
    assert report.lost == 1
    assert Attempt.get_by_id(claim.attempt.id).status == "lost"
    assert NodeRun.get(NodeRun.node_id == "call").status == "retrying"
    assert [b.node_id for b in report.bells] == ["call"]
    # the retry runs as attempt 2 with its own key
    execute_node(run.id, "call", any_hub.runtime)
    assert Run.get_by_id(run.id).status == "succeeded"
    assert len(sink.hits("/call")) == 1
    assert sink.hits("/call")[0].headers["Idempotency-Key"] == idempotency_key(run.id, "call", 2)


def test_retryable_failure_then_success(any_hub, sink):
    sink.respond("/call", (503, {"busy": True}), (200, {"ok": True}))
    run = start_run(make_flow_version(one_call(sink.url, retry={"max_attempts": 3, "backoff_seconds": 0})))
    bells = execute_node(run.id, "call", any_hub.runtime)
    assert [b.node_id for b in bells] == ["call"] and bells[0].eta is not None
    node = NodeRun.get(NodeRun.node_id == "call")
    assert node.status == "retrying" and node.error["retryable"] is True
    execute_node(run.id, "call", any_hub.runtime)
    assert Run.get_by_id(run.id).status == "succeeded"
    assert [a.status for a in Attempt.select().order_by(Attempt.number)] == ["failed", "succeeded"]


def test_fatal_failure_skips_successors_and_fails_the_run(any_hub, sink):
    sink.respond("/call", (404, {"missing": True}))
    doc = one_call(sink.url)
    doc["nodes"].append({"id": "after", "connector": "http", "config": {"url": f"{sink.url}/after"}})
    doc["edges"] = [{"from": "call", "to": "after"}]
    run = start_run(make_flow_version(doc))
    assert execute_node(run.id, "call", any_hub.runtime) == []
    statuses = {n.node_id: n.status for n in NodeRun.select()}
    assert statuses == {"call": "failed", "after": "skipped"}
    run = Run.get_by_id(run.id)
    assert run.status == "failed" and "call" in run.error
    assert sink.hits("/after") == []


def test_redaction_catches_encoded_forms_of_a_secret():
    import base64
    import json
    from urllib.parse import quote

    from hub.runtime import redact

    secret = "s3cr et/+x"
    leaked = {
        "verbatim": f"Bearer {secret}",
        "url": quote(secret, safe=""),
        "json": json.dumps({"k": secret + '"quoted"'}),
        "basic": base64.b64encode(f"user:{secret}".encode()).decode(),
        "b64": base64.b64encode(secret.encode()).decode(),
        secret: "as a key",
    }
    cleaned = redact(leaked, {"TOKEN": secret})
    text = repr(cleaned)
    assert secret not in text and quote(secret, safe="") not in text
    for shift in range(3):
        full = base64.b64encode(b"x" * shift + secret.encode()).decode()
        assert full not in text
    assert cleaned["verbatim"] == "Bearer ***" and "***" in cleaned["basic"]
    assert redact({"fine": "nothing secret here"}, {"TOKEN": secret}) == {"fine": "nothing secret here"}


def test_reaper_does_not_mistake_a_backlog_for_lost_bells(any_hub, sink):
    runs = [start_run(make_flow_version(one_call(sink.url))) for _ in range(3)]
    later = utcnow() + dt.timedelta(seconds=any_hub.settings.requeue_after_seconds + 1)
    # their bells wait in the real queue (no worker is consuming it): nothing to ring again
    any_hub.ring([Doorbell(r.id, "call") for r in runs])
    assert any_hub.huey.pending_count() == 3
    assert reap(any_hub.runtime, now=later, queued=any_hub.huey.pending_count()).bells == []
    # two of the three messages went missing (a queue restart): the two oldest are rung again
    for _ in range(2):
        any_hub.huey.storage.dequeue()
    report = reap(any_hub.runtime, now=later, queued=any_hub.huey.pending_count())
    assert [(b.run_id, b.node_id) for b in report.bells] == [(runs[0].id, "call"), (runs[1].id, "call")]


def test_a_reused_version_id_never_serves_a_stale_cached_flow(any_hub, sink):
    """SQLite gives a deleted row's id to the next insert; the flow cache must tell the versions apart."""
    from hub.models import Flow, FlowVersion, Workspace

    first = make_flow_version(one_call(sink.url))
    run = start_run(first)
    execute_node(run.id, "call", any_hub.runtime)  # parses and caches the first version
    Workspace.delete().execute()  # everything goes, by cascade: the ids are free again on SQLite
    assert not FlowVersion.select().exists() and not Flow.select().exists()
    doc = {"name": "other", "nodes": [{"id": "other", "connector": "transform", "config": {"value": 7}}],
           "output": "{{ nodes.other.output }}"}
    second = make_flow_version(doc)
    if not any_hub.settings.database_url.startswith("postgres"):
        assert second.id == first.id  # the case under test (PostgreSQL's sequences never reuse ids)
    run = start_run(second)
    assert claim_attempt(run.id, "call", any_hub.runtime) is None  # not a node of this version
    execute_node(run.id, "other", any_hub.runtime)
    assert Run.get_by_id(run.id).output == 7
    assert len(sink.hits("/call")) == 1
