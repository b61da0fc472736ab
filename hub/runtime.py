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

import base64
import contextlib
import datetime as dt
import inspect
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import peewee

from hub.crypto import SecretBox
from hub.db import Prepared, connection, db, defer, insert_rows, is_postgres, param, write_transaction
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
from hub.models import Attempt, DeadLetter, FlowVersion, NodeRun, Run, RunEvent, Secret, utcnow
from sandbox import Limits, Result

log = logging.getLogger("hookhub.runtime")

__all__ = [
    "Claim",
    "ControlError",
    "Doorbell",
    "cancel_run",
    "redrive_dead_letter",
    "claim_attempt",
    "create_run",
    "create_runs",
    "NewRun",
    "execute_node",
    "finish_attempt",
    "pause_run",
    "reap",
    "resume_run",
    "retry_run",
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
    #: how often a worker looks whether the attempt it runs was cancelled (or declared lost)
    cancel_poll_seconds: float = 0.5
    cancel_watch: CancelWatch = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cancel_watch = CancelWatch(self.cancel_poll_seconds)


# --- flows -----------------------------------------------------------------------------------------


#: parsed flows per database, keyed by version id and creation time: versions never change, and the
#: pair stays unique where SQLite reuses the id of a deleted row (weak: a closed database takes its own)
_flows: weakref.WeakKeyDictionary[peewee.Database, dict[tuple[Any, Any], Flow]] = weakref.WeakKeyDictionary()
_FLOW_CACHE_SIZE = 512


def load_flow(flow_id: int, version: int) -> Flow:
    """The parsed flow of an immutable version (cached: versions never change)."""
    fv = (FlowVersion.select(FlowVersion.id, FlowVersion.created_at)
          .where((FlowVersion.flow == flow_id) & (FlowVersion.version == version)).get())
    return flow_of(fv)


def flow_of(fv: FlowVersion) -> Flow:
    """The parsed flow of a version row at hand (selected with or without its document)."""
    return parsed_flow(fv.id, fv.created_at, fv.__data__.get("document"))


def parsed_flow(version_id: int, created_at: Any, document: dict | None = None) -> Flow:
    """The parsed flow of a version, from the cache; the document is read only on a miss."""
    key = (version_id, FlowVersion.created_at.python_value(created_at))  # a subquery gives SQLite's text
    cache = _flows.setdefault(db.obj, {})
    flow = cache.get(key)
    if flow is None:
        if document is None:
            document = FlowVersion.select(FlowVersion.document).where(FlowVersion.id == version_id).scalar()
        flow = parse_flow(document)
        if len(cache) >= _FLOW_CACHE_SIZE:
            cache.clear()
        cache[key] = flow
    return flow


# --- events ----------------------------------------------------------------------------------------


class EventLog:
    """Buffers a transaction's events and writes them with consecutive per-run sequence numbers."""

    def __init__(self, run: Run, *, seq: int | None = None) -> None:
        self.run = run
        self.seq = run.event_seq if seq is None else seq
        self.rows: list[dict[str, Any]] = []

    def add(self, type_: str, node_id: str | None = None, **data: Any) -> None:
        self.seq += 1
        self.rows.append(
            {"run": self.run.id, "seq": self.seq, "type": type_, "node_id": node_id,
             "data": data, "created_at": utcnow()}
        )

    def flush(self, *, update_run: bool = True) -> None:
        """Insert the buffered events; ``update_run=False`` when the caller writes ``event_seq`` itself."""
        if self.rows:
            insert_rows(RunEvent, self.rows)
            if update_run:
                _SET_EVENT_SEQ.execute_later(event_seq=self.seq, now=utcnow(), run_id=self.run.id)
            self.run.event_seq = self.seq
            self.rows = []


# The statements every node runs, compiled once per database (see hub.db.Prepared).
_SET_EVENT_SEQ = Prepared(lambda: Run.update(event_seq=param("event_seq"), updated_at=param("now", Run.updated_at))
                          .where(Run.id == param("run_id")))
_CLAIM_RUN = Prepared(lambda: (
    Run.update(event_seq=Run.event_seq + 1, updated_at=param("now", Run.updated_at))
    .where((Run.id == param("run_id")) & (Run.status == RunStatus.RUNNING.value)).returning(Run)))


def _claim_version(column: peewee.Field) -> peewee.Select:
    """A column of the flow version of run ``run_id`` (a subquery of the claim's node-row read)."""
    return (FlowVersion.select(column)
            .join(Run, on=(FlowVersion.flow == Run.flow) & (FlowVersion.version == Run.flow_version))
            .where(Run.id == param("run_id")))


_CLAIM_NODES = Prepared(lambda: NodeRun.select(
    NodeRun, _claim_version(FlowVersion.id).alias("version_id"),
    _claim_version(FlowVersion.created_at).alias("version_created_at"),
).where(NodeRun.run == param("run_id")))
_NODE_STATUSES = Prepared(lambda: NodeRun.select(NodeRun.node_id, NodeRun.status).where(NodeRun.run == param("run_id")))
_ATTEMPT_FIELDS = (Attempt.key, Attempt.node_run, Attempt.run, Attempt.node_id, Attempt.number, Attempt.status,
                   Attempt.worker, Attempt.started_at, Attempt.lease_expires_at)
_INSERT_ATTEMPT = Prepared(lambda: (
    Attempt.insert({f: param(f.name, f) for f in _ATTEMPT_FIELDS})
    .on_conflict(conflict_target=[Attempt.key], action="NOTHING").returning(Attempt.id)))
_START_NODE = Prepared(lambda: NodeRun.update(
    status=NodeStatus.RUNNING.value, attempts=param("attempts"), started_at=param("started_at", NodeRun.started_at),
).where(NodeRun.id == param("id")))
_CLOSE_ATTEMPT = Prepared(lambda: Attempt.update(
    status=param("status"), output=param("output", Attempt.output), error=param("error", Attempt.error),
    finished_at=param("now", Attempt.finished_at), duration_ms=param("duration_ms", Attempt.duration_ms),
).where((Attempt.id == param("id")) & (Attempt.status == "running")))
_FINISH_NODE = Prepared(lambda: NodeRun.update(
    status=param("status"), output=param("output", NodeRun.output), error=param("error", NodeRun.error),
    finished_at=param("now", NodeRun.finished_at),
).where((NodeRun.run == param("run_id")) & (NodeRun.node_id == param("node_id"))))
_LOCK_RUN = Prepared(lambda: Run.select().where(Run.id == param("run_id")).for_update(is_postgres()))


def _lock_run(run_id: int) -> Run | None:
    """The run row, locked until the transaction ends (PostgreSQL; SQLite's writer holds the database)."""
    return _LOCK_RUN.first(run_id=run_id)


# --- creating runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRun:
    """What starts a run: a flow version and what the trigger carried."""

    flow_version: FlowVersion
    trigger_data: dict[str, Any]
    workspace_id: int
    trigger_id: int | None = None
    source: str = "manual"


def create_runs(new_runs: Sequence[NewRun]) -> list[tuple[Run, list[Doorbell]]]:
    """Insert runs, their node rows and first events: one statement each, however many runs. Call
    inside a write transaction; ring the bells after commit."""
    now = utcnow()
    planned: list[tuple[Run, dict[str, NodeStatus], list[str]]] = []
    for new in new_runs:
        fv = new.flow_version
        statuses = initial_statuses(flow_of(fv))
        ready = [n for n, s in statuses.items() if s == NodeStatus.READY]
        run = Run(
            workspace=new.workspace_id, flow=fv.flow_id, flow_version=fv.version, trigger=new.trigger_id,
            source=new.source, status=RunStatus.RUNNING.value, trigger_data=new.trigger_data,
            created_at=now, updated_at=now,
            event_seq=1 + len(ready),  # the events below, written without a second update of the run
        )
        planned.append((run, statuses, ready))
    if not planned:
        return []
    # The ids of one multi-row INSERT come from one sequence (SQLite: one writer) in row order, but
    # RETURNING need not list them in that order: sorted, they pair with the rows again.
    ids = sorted(row.id for row in insert_rows(Run, [dict(run.__data__) for run, _, _ in planned], Run.id))
    created: list[tuple[Run, list[Doorbell]]] = []
    node_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    for (run, statuses, ready), run_id, new in zip(planned, ids, new_runs, strict=True):
        run.id = run_id
        node_rows += [
            {"run": run.id, "node_id": node_id, "status": status.value,
             "due_at": now if status == NodeStatus.READY else None,
             "enqueued_at": now if status == NodeStatus.READY else None}
            for node_id, status in statuses.items()
        ]
        events = EventLog(run, seq=0)
        events.add("run.created", source=new.source, flow_version=new.flow_version.version)
        for node_id in ready:
            events.add("node.ready", node_id)
        event_rows += events.rows
        created.append((run, [Doorbell(run.id, n) for n in ready]))
    insert_rows(NodeRun, node_rows)
    insert_rows(RunEvent, event_rows)
    return created


def create_run(
    flow_version: FlowVersion,
    trigger_data: dict[str, Any],
    *,
    workspace_id: int,
    trigger_id: int | None = None,
    source: str = "manual",
) -> tuple[Run, list[Doorbell]]:
    """Insert one run (see :func:`create_runs`)."""
    return create_runs([NewRun(flow_version, trigger_data, workspace_id, trigger_id, source)])[0]


# --- claiming and finishing attempts ---------------------------------------------------------------


@dataclass
class Claim:
    run: Run
    node_run: NodeRun
    attempt: Attempt
    flow: Flow
    #: every node row of the run as of the claim (what the node's templates see)
    node_runs: list[NodeRun] = field(default_factory=list)

    @property
    def node(self):
        return self.flow.nodes[self.node_run.node_id]


def claim_attempt(run_id: int, node_id: str, cfg: RuntimeConfig) -> Claim | None:
    """Claim the next attempt of a node, or None when there is nothing to do.

    The attempt row's UNIQUE key sha256(run:node:attempt) is the final word: if two workers get
    here with the same message, exactly one insert succeeds.
    """
    now = utcnow()
    with write_transaction() as txn:
        # The run is locked last, so that concurrent claims and finishes of its other nodes wait for
        # one statement and the COMMIT, not the whole claim. Reading the node rows unlocked is safe:
        # the attempt key decides between two claimers, and the lock's status check below between a
        # claim and a cancel or pause.
        node_runs = _CLAIM_NODES.rows(run_id=run_id)
        node_run = next((nr for nr in node_runs if nr.node_id == node_id), None)
        if (node_run is None or node_run.status not in CLAIMABLE
                or (node_run.due_at is not None and node_run.due_at > now)):  # a retry not due yet
            txn.rollback()
            return None
        flow = parsed_flow(node_run.version_id, node_run.version_created_at)
        node = flow.nodes[node_id]
        number = node_run.attempts + 1
        timeout = _limits(node, cfg).timeout_seconds
        key = idempotency_key(run_id, node_id, number)
        attempt = Attempt(
            key=key, node_run=node_run.id, run=run_id, node_id=node_id, number=number,
            status="running", worker=cfg.worker_name, started_at=now,
            lease_expires_at=now + dt.timedelta(seconds=timeout + cfg.lease_grace_seconds),
        )
        inserted = _INSERT_ATTEMPT.rows(**{f.name: attempt.__data__[f.name] for f in _ATTEMPT_FIELDS})
        if not inserted:
            txn.rollback()
            return None
        attempt.id = inserted[0].id
        # One statement locks the run, checks it is running and reserves the sequence number of the
        # node.started event below (all given back by the rollback when it is not running).
        run = _CLAIM_RUN.first(now=now, run_id=run_id)
        if run is None:
            txn.rollback()
            return None
        node_run.status = NodeStatus.RUNNING.value
        node_run.attempts = number
        node_run.started_at = node_run.started_at or now
        _START_NODE.execute_later(attempts=number, started_at=node_run.started_at, id=node_run.id)
        events = EventLog(run, seq=run.event_seq - 1)
        events.add("node.started", node_id, attempt=number, worker=cfg.worker_name)
        events.flush(update_run=False)
    return Claim(run=run, node_run=node_run, attempt=attempt, flow=flow, node_runs=node_runs)


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


def _needles(secrets: Mapping[str, str]) -> list[str]:
    """Each secret as it may appear in output: verbatim, URL-encoded, JSON-escaped, base64 (Basic auth)."""
    found: set[str] = set()
    for value in secrets.values():
        if not value or len(value) < 4:
            continue
        found.update({value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]})
        raw = value.encode()
        for shift in range(3):  # inside a longer base64 text ("user:pass"), at each byte alignment
            encoded = base64.b64encode(b"\0" * shift + raw).decode()
            # keep only the characters made purely of the secret's bits
            found.add(encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6])
    return sorted(found, key=len, reverse=True)  # longest first: a variant may contain another


def redact(value: Any, secrets: Mapping[str, str], needles: list[str] | None = None) -> Any:
    """Replace every secret value a node used with "***" wherever it appears in a JSON value."""
    needles = _needles(secrets) if needles is None else needles
    if not needles:
        return value
    if isinstance(value, str):
        for needle in needles:
            value = value.replace(needle, "***")
        return value
    if isinstance(value, dict):
        return {redact(k, secrets, needles): redact(v, secrets, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets, needles) for v in value]
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
    node_runs = claim.node_runs
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
        sandbox = cfg.sandbox_for(info.spec.kind)
        if _accepts_cancel(sandbox):
            with cfg.cancel_watch.watch(claim.attempt.id) as cancel:
                result = sandbox.run(info.spec, payload, limits, cancel=cancel)
        else:
            result = sandbox.run(info.spec, payload, limits)
    except Exception as exc:  # a sandbox bug must fail the node, never kill the worker
        log.exception("sandbox failed for run %s node %s", run_id, node_id)
        result = Result(ok=False, error=f"sandbox error: {exc}", error_kind="sandbox", retryable=True)
    if not result.duration_ms:
        result.duration_ms = (time.monotonic() - started) * 1000
    return finish_attempt(claim, result, cfg, secrets.used)


def _accepts_cancel(sandbox: Any) -> bool:
    try:
        return "cancel" in inspect.signature(sandbox.run).parameters
    except (TypeError, ValueError):
        return False


class CancelWatch:
    """Sets an attempt's Event once it stops being ``running`` in the database.

    Cancel is a committed row (the attempt marked ``cancelled``), so it reaches an attempt in any
    worker process on any machine. One thread per process watches every attempt running there with
    one query every ``interval`` seconds (a thread per attempt cost ≈ 0.5 ms per node to start and
    join); the sandbox kills the attempt's process group when its event is set.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._watched: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, attempt_id: int) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            self._watched[attempt_id] = event
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cancel-watch", daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            yield event
        finally:
            with self._lock:
                self._watched.pop(attempt_id, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._watched:
                    self._wake.wait()
            time.sleep(self.interval)
            with self._lock:
                ids = list(self._watched)
            if not ids:
                continue
            try:
                with connection():
                    running = {a.id for a in Attempt.select(Attempt.id).where(
                        Attempt.id.in_(ids) & (Attempt.status == "running"))}
            except Exception:  # a database hiccup must not kill attempts; look again
                log.warning("cancel watch: could not read attempts %s", ids, exc_info=True)
                continue
            with self._lock:
                for attempt_id in ids:
                    event = self._watched.get(attempt_id)
                    if event is not None and attempt_id not in running:
                        event.set()


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
    now = utcnow()
    attempt = claim.attempt
    with write_transaction():
        run = _lock_run(claim.run.id)
        # A reaper may have declared it lost, or the run been cancelled: then its successor decides.
        if not _close_attempt(attempt, result, output, error, now):
            events = EventLog(run)
            events.add("attempt.late_result", claim.node_run.node_id, attempt=attempt.number,
                       ok=result.ok)
            events.flush()
            return []
        return _record(run, claim.flow, attempt, result.ok, output, error, result, cfg, logs, now=now)


def _close_attempt(attempt: Attempt, result: Result, output: Any, error: Any, now: dt.datetime) -> bool:
    """Write an attempt's outcome if it is still running; False if someone else closed it first."""
    status = "succeeded" if result.ok else ("lost" if result.error_kind == "lost" else "failed")
    return bool(_CLOSE_ATTEMPT.execute(status=status, output=output, error=error, now=now,
                                       duration_ms=result.duration_ms, id=attempt.id))


def _record(run: Run, flow: Flow, attempt: Attempt, ok: bool, output: Any, error: Any,
            result: Result, cfg: RuntimeConfig, logs: list[str] | None = None,
            now: dt.datetime | None = None) -> list[Doorbell]:
    """Apply an attempt's outcome to node and run state. Caller holds the run lock and has closed the
    attempt (:func:`_close_attempt`)."""
    now = now or utcnow()
    node_id = attempt.node_id
    node = flow.nodes[node_id]
    events = EventLog(run)
    bells: list[Doorbell] = []
    for line in logs or []:
        events.add("node.log", node_id, attempt=attempt.number, line=line)

    this_node = (NodeRun.run == run.id) & (NodeRun.node_id == node_id)

    if run.status in (RunStatus.CANCELLED.value, RunStatus.SUCCEEDED.value, RunStatus.FAILED.value):
        # Cancelled while this attempt ran: keep what it did, start nothing new.
        _FINISH_NODE.execute_later(status=NodeStatus.SUCCEEDED.value if ok else NodeStatus.FAILED.value,
                                   output=output, error=error, now=now, run_id=run.id, node_id=node_id)
        events.add("node.succeeded" if ok else "node.failed", node_id, attempt=attempt.number, error=error)
        events.flush()
        return []

    if ok:
        _FINISH_NODE.execute_later(status=NodeStatus.SUCCEEDED.value, output=output, error=None, now=now,
                                   run_id=run.id, node_id=node_id)
        events.add("node.succeeded", node_id, attempt=attempt.number, duration_ms=result.duration_ms)
    else:
        used = attempt.number - _attempts_before_reset(run.id, node_id)
        decision = decide_retry(node.retry, max(used, 1), result.retryable, result.retry_after)
        if decision.retry:
            due = now + dt.timedelta(seconds=decision.delay_seconds)
            NodeRun.update(status=NodeStatus.RETRYING.value, error=error, due_at=due,
                           enqueued_at=due).where(this_node).execute()
            events.add("node.retrying", node_id, attempt=attempt.number, error=error,
                       delay_seconds=round(decision.delay_seconds, 3))
            events.flush()
            return [Doorbell(run.id, node_id, eta=due)] if run.status == RunStatus.RUNNING.value else []
        NodeRun.update(status=NodeStatus.FAILED.value, error=error, finished_at=now).where(this_node).execute()
        events.add("node.failed", node_id, attempt=attempt.number, error=error, reason=decision.reason)
        letter = DeadLetter.create(workspace=run.workspace_id, flow=run.flow_id, run=run.id,
                                   node_run=attempt.node_run_id, node_id=node_id, attempts=attempt.number,
                                   error=error, created_at=now)
        events.add("node.dead_lettered", node_id, dead_letter_id=letter.id, attempts=attempt.number)

    bells.extend(_advance(run, flow, events, now))
    events.flush()
    # A paused run records what finished but starts nothing; resume rings its ready nodes.
    return bells if run.status == RunStatus.RUNNING.value else []


def _advance(run: Run, flow: Flow, events: EventLog, now: dt.datetime) -> list[Doorbell]:
    """Make ready what became ready, skip what can never run, finish the run if it is done."""
    # Statuses alone decide what follows; the rows with their outputs are read only for a `when`.
    statuses = {nr.node_id: NodeStatus(nr.status) for nr in _NODE_STATUSES.rows(run_id=run.id)}
    scope = None

    def edge_ok(edge: Edge) -> bool:
        nonlocal scope
        if scope is None:
            scope = node_scope(run, NodeRun.select().where(NodeRun.run == run.id))
        try:
            return bool(render(edge.when, scope))
        except TemplateError as exc:
            events.add("edge.error", edge.target, source=edge.source, error=str(exc))
            return False

    step = advance(flow, statuses, edge_ok)
    bells = []
    if step.ready:
        defer(NodeRun.update(status=NodeStatus.READY.value, due_at=now, enqueued_at=now).where(
            (NodeRun.run == run.id) & NodeRun.node_id.in_(step.ready)))
        for node_id in step.ready:
            statuses[node_id] = NodeStatus.READY
            events.add("node.ready", node_id)
            bells.append(Doorbell(run.id, node_id))
    if step.skipped:
        defer(NodeRun.update(status=NodeStatus.SKIPPED.value, finished_at=now).where(
            (NodeRun.run == run.id) & NodeRun.node_id.in_(step.skipped)))
        for node_id in step.skipped:
            statuses[node_id] = NodeStatus.SKIPPED
            events.add("node.skipped", node_id)

    outcome = run_outcome(flow, statuses)
    if outcome is not None:
        _finish_run(run, flow, outcome, events, now)
    return bells


def _finish_run(run: Run, flow: Flow, outcome: RunStatus, events: EventLog, now: dt.datetime) -> None:
    """Close the run (inside the transaction that wrote its last node's state)."""
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
    defer(Run.update(status=outcome.value, output=output, error=error, finished_at=now).where(Run.id == run.id))
    events.add("run.finished", status=outcome.value, error=error)


def _attempts_before_reset(run_id: int, node_id: str) -> int:
    """Attempts a node had used when it was last reset by a run retry or re-drive (0 if never).

    Attempt numbers continue across resets (keys stay unique), but each reset grants the node's
    retry policy afresh; the count at reset time is in the ``node.reset`` event.
    """
    event = (RunEvent.select(RunEvent.data)
             .where((RunEvent.run == run_id) & (RunEvent.node_id == node_id) & (RunEvent.type == "node.reset"))
             .order_by(RunEvent.seq.desc()).first())
    return int(event.data.get("attempts", 0)) if event is not None else 0


# --- run control -----------------------------------------------------------------------------------


class ControlError(Exception):
    """A control action the run's state does not allow (the API answers 409 with ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _locked(run_id: int) -> Run:
    run = _lock_run(run_id)
    if run is None:
        raise ControlError("run_not_found", f"no run with id {run_id}")
    return run


def cancel_run(run_id: int, *, actor: str | None = None) -> Run:
    """Cancel a running or paused run: every node not finished becomes CANCELLED, at once.

    Running attempts are marked ``cancelled`` in the same transaction; the worker running each one
    sees that within ``cancel_poll_seconds`` and kills its sandbox, and its late result is only
    logged (``attempt.late_result``): it cannot resurrect the run.
    """
    now = utcnow()
    with write_transaction():
        run = _locked(run_id)
        if RunStatus(run.status).terminal:
            raise ControlError("run_finished", f"run {run_id} already finished ({run.status})")
        events = EventLog(run)
        events.add("run.cancel_requested", actor=actor)
        running = list(Attempt.select(Attempt.id, Attempt.node_id, Attempt.number)
                       .where((Attempt.run == run_id) & (Attempt.status == "running")))
        if running:
            Attempt.update(status="cancelled", finished_at=now,
                           error={"message": "cancelled", "kind": "cancelled", "retryable": False}).where(
                Attempt.id.in_([a.id for a in running])).execute()
        for a in running:
            events.add("attempt.cancelled", a.node_id, attempt=a.number)
        open_nodes = [nr.node_id for nr in NodeRun.select(NodeRun.node_id).where(
            (NodeRun.run == run_id) & NodeRun.status.not_in(list(TERMINAL_NODE))).order_by(NodeRun.id)]
        if open_nodes:
            NodeRun.update(status=NodeStatus.CANCELLED.value, finished_at=now).where(
                (NodeRun.run == run_id) & NodeRun.node_id.in_(open_nodes)).execute()
        for node_id in open_nodes:
            events.add("node.cancelled", node_id)
        run.status = RunStatus.CANCELLED.value
        Run.update(status=run.status, error=f"cancelled by {actor}" if actor else "cancelled",
                   finished_at=now).where(Run.id == run_id).execute()
        events.add("run.finished", status=run.status, error="cancelled")
        events.flush()
    return Run.get_by_id(run_id)


def pause_run(run_id: int, *, actor: str | None = None) -> Run:
    """Start no new attempt until resumed; attempts already running finish and are recorded."""
    with write_transaction():
        run = _locked(run_id)
        if run.status != RunStatus.RUNNING.value:
            raise ControlError("run_not_running", f"only a running run can be paused; run {run_id} is "
                               f"{run.status}")
        Run.update(status=RunStatus.PAUSED.value).where(Run.id == run_id).execute()
        run.status = RunStatus.PAUSED.value
        events = EventLog(run)
        events.add("run.paused", actor=actor)
        events.flush()
    return Run.get_by_id(run_id)


def resume_run(run_id: int, *, actor: str | None = None) -> tuple[Run, list[Doorbell]]:
    """Resume a paused run: ring every ready node, and every waiting retry at its due time."""
    now = utcnow()
    with write_transaction():
        run = _locked(run_id)
        if run.status != RunStatus.PAUSED.value:
            raise ControlError("run_not_paused", f"only a paused run can be resumed; run {run_id} is "
                               f"{run.status}")
        Run.update(status=RunStatus.RUNNING.value).where(Run.id == run_id).execute()
        run.status = RunStatus.RUNNING.value
        events = EventLog(run)
        events.add("run.resumed", actor=actor)
        bells = []
        for nr in NodeRun.select().where((NodeRun.run == run_id) & NodeRun.status.in_(CLAIMABLE)):
            due = nr.due_at if nr.due_at is not None and nr.due_at > now else None
            bells.append(Doorbell(run_id, nr.node_id, eta=due))
            NodeRun.update(enqueued_at=due or now).where(NodeRun.id == nr.id).execute()
        events.flush()
    return Run.get_by_id(run_id), bells


def retry_run(run_id: int, node_ids: Iterable[str] | None = None, *, actor: str | None = None,
              require_finished: bool = True) -> tuple[Run, list[Doorbell]]:
    """Run a failed or cancelled run again from where it broke, under the same run id.

    The given nodes (default: every FAILED or CANCELLED node) and their FAILED, SKIPPED or
    CANCELLED descendants go back to PENDING; SUCCEEDED nodes keep their outputs and are not run
    again. Attempt numbers continue (so keys stay unique) and each reset node gets its retry policy
    afresh. Open dead letters of the reset nodes are marked ``redriven``.
    ``require_finished=False`` (a dead-letter re-drive) also accepts a run still running or paused.
    """
    now = utcnow()
    with write_transaction():
        run = _locked(run_id)
        status = RunStatus(run.status)
        if status == RunStatus.SUCCEEDED:
            raise ControlError("run_succeeded", f"run {run_id} succeeded; start a new run instead")
        if require_finished and not status.terminal:
            raise ControlError("run_not_finished", f"run {run_id} is {run.status}; only a failed or "
                               "cancelled run can be retried")
        flow = load_flow(run.flow_id, run.flow_version)
        node_runs = {nr.node_id: nr for nr in NodeRun.select().where(NodeRun.run == run_id)}
        redo = {NodeStatus.FAILED.value, NodeStatus.CANCELLED.value}
        if node_ids is None:
            targets = [n for n, nr in node_runs.items() if nr.status in redo]
        else:
            targets = list(dict.fromkeys(node_ids))
            for n in targets:
                if n not in node_runs:
                    raise ControlError("node_not_found", f"run {run_id} has no node {n!r}")
                if node_runs[n].status not in redo:
                    raise ControlError("node_not_failed", f"node {n!r} of run {run_id} is "
                                       f"{node_runs[n].status}; only failed or cancelled nodes are retried")
        if not targets:
            raise ControlError("nothing_to_retry", f"run {run_id} has no failed or cancelled node")
        reset = set(targets)
        again = redo | {NodeStatus.SKIPPED.value}
        for node_id in flow.topological_order():
            if node_id not in reset and node_runs[node_id].status in again and any(
                    p in reset for p in flow.predecessors(node_id)):
                reset.add(node_id)
        order = [n for n in flow.topological_order() if n in reset]

        events = EventLog(run)
        events.add("run.retry_requested", actor=actor, nodes=targets)
        NodeRun.update(status=NodeStatus.PENDING.value, output=None, error=None, due_at=None,
                       enqueued_at=None, started_at=None, finished_at=None).where(
            (NodeRun.run == run_id) & NodeRun.node_id.in_(order)).execute()
        for node_id in order:
            events.add("node.reset", node_id, attempts=node_runs[node_id].attempts,
                       previous=node_runs[node_id].status)
        DeadLetter.update(status="redriven", redriven_at=now).where(
            (DeadLetter.run == run_id) & DeadLetter.node_id.in_(order) & (DeadLetter.status == "open")
        ).execute()
        if status.terminal:
            run.status = RunStatus.RUNNING.value
            Run.update(status=run.status, output=None, error=None, finished_at=None).where(
                Run.id == run_id).execute()
            events.add("run.resumed", actor=actor, reason="retry")
        bells = _advance(run, flow, events, now)
        events.flush()
    return Run.get_by_id(run_id), (bells if run.status == RunStatus.RUNNING.value else [])


def redrive_dead_letter(letter_id: int, *, actor: str | None = None) -> tuple[DeadLetter, list[Doorbell]]:
    """Re-drive one dead letter: its node (and what its failure skipped) runs again in its run."""
    letter = DeadLetter.get_or_none(DeadLetter.id == letter_id)
    if letter is None:
        raise ControlError("dead_letter_not_found", f"no dead letter with id {letter_id}")
    if letter.status != "open":
        raise ControlError("dead_letter_redriven", f"dead letter {letter_id} was already re-driven")
    _run, bells = retry_run(letter.run_id, [letter.node_id], actor=actor, require_finished=False)
    return DeadLetter.get_by_id(letter_id), bells


# --- the reaper ------------------------------------------------------------------------------------


@dataclass
class ReapReport:
    lost: int = 0
    rung: int = 0
    bells: list[Doorbell] = field(default_factory=list)


def reap(cfg: RuntimeConfig, now: dt.datetime | None = None, batch: int = 500,
         queued: int | None = None) -> ReapReport:
    """Recover what lost messages and dead workers left behind. Safe to run in many processes at once.

    - an attempt whose lease expired is *lost*: it counts as a failed, retryable attempt and the
      node's retry policy decides what follows;
    - a ready (or due retrying) node whose bell was rung more than ``requeue_after_seconds`` ago and
      that nobody claimed is rung again (a duplicate bell is harmless: claims are unique) — but only
      as many of them, oldest first, as exceed ``queued``, the messages waiting in the queue. A
      backlog is not a loss: re-ringing every node of a long backlog every pass flooded the queue
      with duplicates (measured: tens of thousands after two minutes of overload, which then
      delayed every new run); lost bells are still rung once the queue holds fewer messages.
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
            lost = Result(ok=False, error_kind="lost", retryable=True,
                          error="attempt lost: its worker stopped before finishing (lease expired)")
            if not _close_attempt(attempt, lost, None, _error_doc(lost), now):
                continue  # another reaper, or the worker itself, got there first
            flow = load_flow(run.flow_id, run.flow_version)
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
        .order_by(NodeRun.enqueued_at.asc(nulls="first"), NodeRun.id)
        .limit(batch)
    )
    if queued is not None:
        waiting = waiting[: max(0, len(waiting) - queued)]
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
