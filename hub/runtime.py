"""The durable runtime: the engine's decisions applied to the database, one transaction at a time.

Everything here follows one rule (ARCHITECTURE.md): every fact is a committed row before anything is
enqueued, and a queue message only says "look at node N of run R". So every function that changes
state returns the doorbells to ring *after* its transaction commits (:class:`Doorbell`), and losing any
of them is harmless: :func:`reap` finds what they would have started and rings again.

State changes of one run are serialised: PostgreSQL locks the run row (``SELECT … FOR UPDATE``),
SQLite's IMMEDIATE transactions serialise all writers. That is what makes joins correct when two
branches finish at the same moment.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import peewee

from hub.crypto import SecretBox
from hub.db import is_postgres, write_transaction
from hub.engine import (
    Edge,
    Flow,
    NodeStatus,
    RunStatus,
    TemplateError,
    advance,
    decide_retry,
    idempotency_key,
    initial_statuses,
    parse_flow,
    render,
    run_outcome,
)
from hub.models import Attempt, FlowVersion, NodeRun, Run, RunEvent, Secret, utcnow
from sandbox import Limits, Result

log = logging.getLogger("hookhub.runtime")

__all__ = [
    "Claim",
    "Doorbell",
    "claim_attempt",
    "create_run",
    "execute_node",
    "finish_attempt",
    "reap",
]

CLAIMABLE = (NodeStatus.READY.value, NodeStatus.RETRYING.value)
TERMINAL_NODE = {s.value for s in (NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED,
                                   NodeStatus.CANCELLED)}


@dataclass(frozen=True)
class Doorbell:
    """Ask a worker to look at a node, now or at ``eta``."""

    run_id: int
    node_id: str
    eta: dt.datetime | None = None


@dataclass
class RuntimeConfig:
    """What the runtime needs from the process: settings, connectors and sandboxes."""

    secret_box: SecretBox
    catalog: Any  # hub.plugins.Registry
    sandbox_for: Callable[[str], Any]  # sandbox kind -> Sandbox
    allowed_private_networks: tuple[str, ...] = ()
    default_timeout_seconds: float = 30.0
    default_memory_mb: int = 256
    max_timeout_seconds: float = 900.0
    max_memory_mb: int = 2048
    lease_grace_seconds: float = 10.0
    requeue_after_seconds: float = 15.0
    worker_name: str = "worker"


# --- flows -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _cached_flow(flow_version_id: int, document_json: str) -> Flow:
    return parse_flow(json.loads(document_json))


def load_flow(flow_id: int, version: int) -> Flow:
    """The parsed flow of an immutable version (cached: versions never change)."""
    fv = FlowVersion.get((FlowVersion.flow == flow_id) & (FlowVersion.version == version))
    return _cached_flow(fv.id, json.dumps(fv.document, sort_keys=True))


# --- events ----------------------------------------------------------------------------------------


class EventLog:
    """Buffers a transaction's events and writes them with consecutive per-run sequence numbers."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.rows: list[dict[str, Any]] = []

    def add(self, type_: str, node_id: str | None = None, **data: Any) -> None:
        self.run.event_seq += 1
        self.rows.append(
            {"run": self.run.id, "seq": self.run.event_seq, "type": type_, "node_id": node_id,
             "data": data, "created_at": utcnow()}
        )

    def flush(self) -> None:
        if self.rows:
            RunEvent.insert_many(self.rows).execute()
            Run.update(event_seq=self.run.event_seq, updated_at=utcnow()).where(
                Run.id == self.run.id).execute()
            self.rows = []


def _lock_run(run_id: int) -> Run | None:
    query = Run.select().where(Run.id == run_id)
    if is_postgres():
        query = query.for_update()
    return query.first()


# --- creating runs ---------------------------------------------------------------------------------


def create_run(
    flow_version: FlowVersion,
    trigger_data: dict[str, Any],
    *,
    workspace_id: int,
    trigger_id: int | None = None,
    source: str = "manual",
) -> tuple[Run, list[Doorbell]]:
    """Insert a run and its node rows. Call inside a write transaction; ring the bells after commit."""
    flow = load_flow(flow_version.flow_id, flow_version.version)
    now = utcnow()
    run = Run.create(
        workspace=workspace_id,
        flow=flow_version.flow_id,
        flow_version=flow_version.version,
        trigger=trigger_id,
        source=source,
        status=RunStatus.RUNNING.value,
        trigger_data=trigger_data,
        created_at=now,
        updated_at=now,
    )
    statuses = initial_statuses(flow)
    NodeRun.insert_many(
        [
            {
                "run": run.id,
                "node_id": node_id,
                "status": status.value,
                "due_at": now if status == NodeStatus.READY else None,
                "enqueued_at": now if status == NodeStatus.READY else None,
            }
            for node_id, status in statuses.items()
        ]
    ).execute()
    events = EventLog(run)
    events.add("run.created", source=source, flow_version=flow_version.version)
    ready = [n for n, s in statuses.items() if s == NodeStatus.READY]
    for node_id in ready:
        events.add("node.ready", node_id)
    events.flush()
    return run, [Doorbell(run.id, n) for n in ready]


# --- claiming and finishing attempts ---------------------------------------------------------------


@dataclass
class Claim:
    run: Run
    node_run: NodeRun
    attempt: Attempt
    flow: Flow

    @property
    def node(self):
        return self.flow.nodes[self.node_run.node_id]


def claim_attempt(run_id: int, node_id: str, cfg: RuntimeConfig) -> Claim | None:
    """Claim the next attempt of a node, or None when there is nothing to do.

    The attempt row's UNIQUE key sha256(run:node:attempt) is the final word: if two workers get
    here with the same message, exactly one insert succeeds.
    """
    now = utcnow()
    with write_transaction():
        run = _lock_run(run_id)
        if run is None or run.status != RunStatus.RUNNING.value:
            return None
        node_run = NodeRun.get_or_none((NodeRun.run == run_id) & (NodeRun.node_id == node_id))
        if node_run is None or node_run.status not in CLAIMABLE:
            return None
        if node_run.due_at is not None and node_run.due_at > now:
            return None  # a retry that is not due yet; its own bell is scheduled
        flow = load_flow(run.flow_id, run.flow_version)
        node = flow.nodes[node_id]
        number = node_run.attempts + 1
        timeout = _limits(node, cfg).timeout_seconds
        key = idempotency_key(run_id, node_id, number)
        inserted = (
            Attempt.insert(
                key=key, node_run=node_run.id, run=run_id, node_id=node_id, number=number,
                status="running", worker=cfg.worker_name, started_at=now,
                lease_expires_at=now + dt.timedelta(seconds=timeout + cfg.lease_grace_seconds),
            )
            .on_conflict(conflict_target=[Attempt.key], action="NOTHING")
            .as_rowcount()
            .execute()
        )
        if inserted != 1:
            return None
        node_run.status = NodeStatus.RUNNING.value
        node_run.attempts = number
        node_run.started_at = node_run.started_at or now
        node_run.save(only=[NodeRun.status, NodeRun.attempts, NodeRun.started_at])
        events = EventLog(run)
        events.add("node.started", node_id, attempt=number, worker=cfg.worker_name)
        events.flush()
        attempt = Attempt.get(Attempt.key == key)
    return Claim(run=run, node_run=node_run, attempt=attempt, flow=flow)


def _limits(node, cfg: RuntimeConfig, network: bool = False) -> Limits:
    timeout = min(node.timeout_seconds or cfg.default_timeout_seconds, cfg.max_timeout_seconds)
    memory = min(node.memory_mb or cfg.default_memory_mb, cfg.max_memory_mb)
    return Limits(timeout_seconds=float(timeout), memory_mb=int(memory), network=network)


class LazySecrets(Mapping):
    """``secrets.NAME`` in templates: decrypts only what a node references, and remembers it."""

    def __init__(self, workspace_id: int, box: SecretBox) -> None:
        self._workspace_id = workspace_id
        self._box = box
        self.used: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.used:
            row = Secret.get_or_none((Secret.workspace == self._workspace_id) & (Secret.name == name))
            if row is None:
                raise KeyError(name)
            self.used[name] = self._box.decrypt(row.ciphertext)
        return self.used[name]

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no secret named {name!r} in this workspace") from None

    def __iter__(self):
        return iter(self.used)

    def __len__(self) -> int:
        return len(self.used)


def node_scope(run: Run, node_runs: Iterable[NodeRun], secrets: Any = None) -> dict[str, Any]:
    """The names templates see (SPEC §3)."""
    return {
        "trigger": run.trigger_data or {},
        "nodes": {nr.node_id: {"output": nr.output, "status": nr.status, "error": nr.error}
                  for nr in node_runs},
        "secrets": secrets if secrets is not None else {},
        "run": {"id": run.id, "flow_id": run.flow_id, "flow_version": run.flow_version},
    }


def redact(value: Any, secrets: Mapping[str, str]) -> Any:
    """Replace every secret value a node used with "***" wherever it appears in a JSON value."""
    needles = [s for s in secrets.values() if s and len(s) >= 4]
    if not needles:
        return value
    if isinstance(value, str):
        for needle in needles:
            value = value.replace(needle, "***")
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value


def execute_node(run_id: int, node_id: str, cfg: RuntimeConfig) -> list[Doorbell]:
    """The whole life of one queue message: claim, render, run in the sandbox, record, advance."""
    claim = claim_attempt(run_id, node_id, cfg)
    if claim is None:
        return []
    node = claim.node
    info = cfg.catalog.get(node.connector)
    secrets = LazySecrets(claim.run.workspace_id, cfg.secret_box)
    if info is None:
        result = Result(ok=False, error=f'connector "{node.connector}" is not installed',
                        error_kind="config")
        return finish_attempt(claim, result, cfg, secrets.used)
    node_runs = list(NodeRun.select().where(NodeRun.run == run_id))
    scope = node_scope(claim.run, node_runs, secrets)
    try:
        config = render(node.config, scope)
        if node.input is not None:
            node_input = render(node.input, scope)
        elif not claim.flow.incoming(node_id):
            node_input = claim.run.trigger_data
        else:
            outputs = {nr.node_id: nr.output for nr in node_runs}
            node_input = {pred: outputs.get(pred) for pred in claim.flow.predecessors(node_id)}
    except TemplateError as exc:
        result = Result(ok=False, error=f"template error at {exc}", error_kind="template")
        return finish_attempt(claim, result, cfg, secrets.used)

    payload = {
        "config": config,
        "input": node_input,
        "context": {
            "run_id": run_id,
            "node_id": node_id,
            "attempt": claim.attempt.number,
            "idempotency_key": claim.attempt.key,
            "allowed_private_networks": list(cfg.allowed_private_networks),
        },
    }
    limits = _limits(node, cfg, network=bool(info.permissions.get("network")))
    started = time.monotonic()
    try:
        result = cfg.sandbox_for(info.spec.kind).run(info.spec, payload, limits)
    except Exception as exc:  # a sandbox bug must fail the node, never kill the worker
        log.exception("sandbox failed for run %s node %s", run_id, node_id)
        result = Result(ok=False, error=f"sandbox error: {exc}", error_kind="sandbox", retryable=True)
    if not result.duration_ms:
        result.duration_ms = (time.monotonic() - started) * 1000
    return finish_attempt(claim, result, cfg, secrets.used)


def _error_doc(result: Result) -> dict[str, Any]:
    doc = {"message": result.error or "failed", "kind": result.error_kind, "retryable": result.retryable}
    if result.retry_after is not None:
        doc["retry_after"] = result.retry_after
    return doc


def finish_attempt(
    claim: Claim, result: Result, cfg: RuntimeConfig, used_secrets: Mapping[str, str] | None = None
) -> list[Doorbell]:
    """Record an attempt's result and everything that follows from it, in one transaction."""
    used_secrets = used_secrets or {}
    output = redact(result.output, used_secrets) if result.ok else None
    error = redact(_error_doc(result), used_secrets) if not result.ok else None
    logs = redact(list(result.logs[:200]), used_secrets)
    with write_transaction():
        run = _lock_run(claim.run.id)
        attempt = Attempt.get_by_id(claim.attempt.id)
        if attempt.status != "running":
            # A reaper already declared it lost (or the run was cancelled): its successor decides.
            events = EventLog(run)
            events.add("attempt.late_result", claim.node_run.node_id, attempt=attempt.number,
                       ok=result.ok)
            events.flush()
            return []
        return _record(run, claim.flow, attempt, result.ok, output, error, result, cfg, logs)


def _record(run: Run, flow: Flow, attempt: Attempt, ok: bool, output: Any, error: Any,
            result: Result, cfg: RuntimeConfig, logs: list[str] | None = None,
            now: dt.datetime | None = None) -> list[Doorbell]:
    """Apply an attempt's outcome to node and run state. Caller holds the run lock."""
    now = now or utcnow()
    node_id = attempt.node_id
    node = flow.nodes[node_id]
    events = EventLog(run)
    bells: list[Doorbell] = []
    for line in logs or []:
        events.add("node.log", node_id, attempt=attempt.number, line=line)

    Attempt.update(
        status="succeeded" if ok else ("lost" if result.error_kind == "lost" else "failed"),
        output=output, error=error, finished_at=now, duration_ms=result.duration_ms,
    ).where(Attempt.id == attempt.id).execute()
    node_run = NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == node_id))

    if run.status in (RunStatus.CANCELLED.value, RunStatus.SUCCEEDED.value, RunStatus.FAILED.value):
        # Cancelled while this attempt ran: keep what it did, start nothing new.
        NodeRun.update(status=NodeStatus.SUCCEEDED.value if ok else NodeStatus.FAILED.value,
                       output=output, error=error, finished_at=now).where(NodeRun.id == node_run.id).execute()
        events.add("node.succeeded" if ok else "node.failed", node_id, attempt=attempt.number, error=error)
        events.flush()
        return []

    if ok:
        NodeRun.update(status=NodeStatus.SUCCEEDED.value, output=output, error=None,
                       finished_at=now).where(NodeRun.id == node_run.id).execute()
        events.add("node.succeeded", node_id, attempt=attempt.number, duration_ms=result.duration_ms)
    else:
        decision = decide_retry(node.retry, attempt.number, result.retryable, result.retry_after)
        if decision.retry:
            due = now + dt.timedelta(seconds=decision.delay_seconds)
            NodeRun.update(status=NodeStatus.RETRYING.value, error=error, due_at=due,
                           enqueued_at=due).where(NodeRun.id == node_run.id).execute()
            events.add("node.retrying", node_id, attempt=attempt.number, error=error,
                       delay_seconds=round(decision.delay_seconds, 3))
            events.flush()
            return [Doorbell(run.id, node_id, eta=due)] if run.status == RunStatus.RUNNING.value else []
        NodeRun.update(status=NodeStatus.FAILED.value, error=error, finished_at=now).where(
            NodeRun.id == node_run.id).execute()
        events.add("node.failed", node_id, attempt=attempt.number, error=error, reason=decision.reason)

    bells.extend(_advance(run, flow, events, now))
    events.flush()
    # A paused run records what finished but starts nothing; resume rings its ready nodes.
    return bells if run.status == RunStatus.RUNNING.value else []


def _advance(run: Run, flow: Flow, events: EventLog, now: dt.datetime) -> list[Doorbell]:
    """Make ready what became ready, skip what can never run, finish the run if it is done."""
    node_runs = {nr.node_id: nr for nr in NodeRun.select().where(NodeRun.run == run.id)}
    statuses = {nid: NodeStatus(nr.status) for nid, nr in node_runs.items()}
    scope = None

    def edge_ok(edge: Edge) -> bool:
        nonlocal scope
        if scope is None:
            scope = node_scope(run, node_runs.values())
        try:
            return bool(render(edge.when, scope))
        except TemplateError as exc:
            events.add("edge.error", edge.target, source=edge.source, error=str(exc))
            return False

    step = advance(flow, statuses, edge_ok)
    bells = []
    if step.ready:
        NodeRun.update(status=NodeStatus.READY.value, due_at=now, enqueued_at=now).where(
            (NodeRun.run == run.id) & NodeRun.node_id.in_(step.ready)).execute()
        for node_id in step.ready:
            statuses[node_id] = NodeStatus.READY
            events.add("node.ready", node_id)
            bells.append(Doorbell(run.id, node_id))
    if step.skipped:
        NodeRun.update(status=NodeStatus.SKIPPED.value, finished_at=now).where(
            (NodeRun.run == run.id) & NodeRun.node_id.in_(step.skipped)).execute()
        for node_id in step.skipped:
            statuses[node_id] = NodeStatus.SKIPPED
            events.add("node.skipped", node_id)

    outcome = run_outcome(flow, statuses)
    if outcome is not None:
        _finish_run(run, flow, outcome, events, now)
    return bells


def _finish_run(run: Run, flow: Flow, outcome: RunStatus, events: EventLog, now: dt.datetime) -> None:
    output, error = None, None
    node_runs = list(NodeRun.select().where(NodeRun.run == run.id))
    if outcome == RunStatus.SUCCEEDED and flow.output is not None:
        try:
            output = render(flow.output, node_scope(run, node_runs))
        except TemplateError as exc:
            outcome, error = RunStatus.FAILED, f"output template error at {exc}"
    elif outcome == RunStatus.FAILED:
        failed = [nr.node_id for nr in node_runs if nr.status == NodeStatus.FAILED.value]
        error = "failed nodes: " + ", ".join(failed) if failed else "failed"
    run.status = outcome.value
    Run.update(status=outcome.value, output=output, error=error, finished_at=now).where(
        Run.id == run.id).execute()
    events.add("run.finished", status=outcome.value, error=error)


# --- the reaper ------------------------------------------------------------------------------------


@dataclass
class ReapReport:
    lost: int = 0
    rung: int = 0
    bells: list[Doorbell] = field(default_factory=list)


def reap(cfg: RuntimeConfig, now: dt.datetime | None = None, batch: int = 500) -> ReapReport:
    """Recover what lost messages and dead workers left behind. Safe to run in many processes at once.

    - an attempt whose lease expired is *lost*: it counts as a failed, retryable attempt and the
      node's retry policy decides what follows;
    - a ready (or due retrying) node whose bell was rung more than ``requeue_after_seconds`` ago and
      that nobody claimed is rung again (a duplicate bell is harmless: claims are unique).
    """
    now = now or utcnow()
    report = ReapReport()
    expired = list(
        Attempt.select(Attempt.id, Attempt.run)
        .where((Attempt.status == "running") & (Attempt.lease_expires_at < now))
        .limit(batch)
    )
    for row in expired:
        with write_transaction():
            run = _lock_run(row.run_id)
            attempt = Attempt.get_by_id(row.id)
            if attempt.status != "running":
                continue  # another reaper, or the worker itself, got there first
            flow = load_flow(run.flow_id, run.flow_version)
            lost = Result(ok=False, error_kind="lost", retryable=True,
                          error="attempt lost: its worker stopped before finishing (lease expired)")
            report.bells.extend(_record(run, flow, attempt, False, None, _error_doc(lost), lost, cfg, now=now))
            report.lost += 1

    stale = now - dt.timedelta(seconds=cfg.requeue_after_seconds)
    waiting = list(
        NodeRun.select(NodeRun.id, NodeRun.run, NodeRun.node_id, NodeRun.enqueued_at)
        .join(Run)
        .where(
            (Run.status == RunStatus.RUNNING.value)
            & NodeRun.status.in_(CLAIMABLE)
            & (NodeRun.due_at <= now)
            & (NodeRun.enqueued_at.is_null() | (NodeRun.enqueued_at < stale))
        )
        .limit(batch)
    )
    for nr in waiting:
        # Conditional update: of several reapers, only one rings for this node this round.
        cond = NodeRun.enqueued_at.is_null() if nr.enqueued_at is None else (
            NodeRun.enqueued_at == nr.enqueued_at)
        with write_transaction():
            changed = NodeRun.update(enqueued_at=now).where((NodeRun.id == nr.id) & cond).execute()
        if changed:
            report.bells.append(Doorbell(nr.run_id, nr.node_id))
            report.rung += 1
    return report


def is_unique_violation(exc: Exception) -> bool:
    return isinstance(exc, peewee.IntegrityError)
