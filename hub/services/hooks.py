"""Inbound webhooks: verify, rate-limit, deduplicate, commit the delivery and its run, then acknowledge.

Order of the checks for one request (each refusal starts nothing):
unknown/disabled token → 404; method → 405; rate limit → 429; body size → 413; signature → 401;
malformed body → 400; duplicate delivery id (within the retention window) → 202 with the original run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import peewee
from limits import parse as parse_limit
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from peewee import JOIN, fn

from hub.api.errors import ApiError
from hub.crypto import SecretBox
from hub.db import Prepared, connection, insert_rows, param, write_transaction
from hub.engine import RunStatus
from hub.models import Delivery, Flow, FlowVersion, Run, Secret, Trigger, TriggerToken, utcnow
from hub.runtime import Doorbell, NewRun, create_run, create_runs
from hub.services.live import Waker
from hub.services.verify import VerifyError, verify_request

log = logging.getLogger("hookhub.hooks")

DEFAULT_MAX_BODY = 1 << 20
#: how long a delivery id is remembered for deduplication unless the trigger says otherwise
DEFAULT_DEDUPE_RETENTION = 7 * 86400
REDACTED_HEADERS = {"authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization"}
_SENSITIVE = re.compile(r"secret|token|passw|api[-_]?key|auth|cookie|session", re.I)

#: where each preset's provider puts its delivery id: ("header", name) or ("json_path", path), first hit wins
PRESET_DEDUPE: dict[str, list[tuple[str, str]]] = {
    "github": [("header", "x-github-delivery")],
    "stripe": [("json_path", "id")],  # the event id (evt_…); Stripe resends the same event on retries
    "slack": [("json_path", "event_id"), ("json_path", "trigger_id")],  # Events API; slash commands
    "standard-webhooks": [("header", "webhook-id")],
}


@dataclass
class Inbound:
    method: str
    headers: dict[str, str]
    query: dict[str, Any]
    body: bytes
    content_type: str | None


@dataclass
class Accepted:
    run_id: int
    duplicate: bool
    bells: list[Doorbell]
    delivery_id: int | None = None


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """``trigger.body``: JSON parsed, forms as a dict, text as a string, other bytes as latin-1 text."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not raw:
        return None
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed_body", f"the body is not valid JSON: {exc}") from None
    if media == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ApiError(400, "malformed_body", "the form body is not UTF-8") from None
        return {k: v[0] if len(v) == 1 else v for k, v in pairs.items()}
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _json_path(doc: Any, path: str) -> Any:
    """A dotted path such as ``$.data.id`` or ``id`` (list indexes as numbers)."""
    current = doc
    for part in path.removeprefix("$").strip(".").split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def dedupe_rules(config: dict) -> list[tuple[str, str]]:
    """The trigger's own rule, else its verification preset's delivery id; ``enabled: false`` turns it off."""
    rule = config.get("dedupe") or {}
    if rule.get("enabled") is False:
        return []
    if rule.get("header"):
        return [("header", rule["header"].lower())]
    if rule.get("json_path"):
        return [("json_path", rule["json_path"])]
    return PRESET_DEDUPE.get((config.get("verify") or {}).get("scheme", ""), [])


def dedupe_key(config: dict, inbound: Inbound, body: Any) -> str | None:
    for kind, where in dedupe_rules(config):
        value = inbound.headers.get(where) if kind == "header" else _json_path(body, where)
        if value is not None and value != "" and not isinstance(value, (dict, list)):
            return str(value)[:255]
    return None


def redact_headers(headers: dict[str, str], config: dict) -> dict[str, str]:
    """Headers as stored in the delivery log and shown to flows: credentials replaced by ``***``."""
    verify = config.get("verify") or {}
    secret_header = (verify.get("header") or "x-webhook-secret").lower() if verify.get("scheme") == "header" else None
    return {k: ("***" if k in REDACTED_HEADERS or k == secret_header or _SENSITIVE.search(k) else v)
            for k, v in headers.items()}


# --- tokens and secrets ----------------------------------------------------------------------------


def _with_version():
    """Webhook triggers with the flow version a new run would use, in one query (a delivery's first read).
    The version's document is left out: the parsed flow is cached under the version's id and time."""
    version = fn.COALESCE(Trigger.flow_version, Flow.latest_version)
    return (Trigger.select(Trigger, FlowVersion.id, FlowVersion.flow, FlowVersion.version, FlowVersion.created_at)
            .join(Flow, on=(Trigger.flow == Flow.id))
            .join(FlowVersion, JOIN.LEFT_OUTER, on=(FlowVersion.flow == Flow.id) & (FlowVersion.version == version),
                  attr="run_version")
            .where(Trigger.type == "webhook"))


# compiled once per database: every delivery runs it (0.37 ms to compile, see hub.db.Prepared)
_TRIGGER_BY_TOKEN = Prepared(lambda: _with_version().where(Trigger.token == param("token")).limit(1))
_RUN_BY_ID = Prepared(lambda: Run.select().where(Run.id == param("id")))


def find_trigger(token: str) -> Trigger:
    """The enabled webhook trigger for a token: its current one, or a rotated one still in its overlap.
    ``trigger.flow.run_version`` is the flow version a new run uses."""
    trigger = _TRIGGER_BY_TOKEN.first(token=token)
    if trigger is None:
        old = TriggerToken.get_or_none((TriggerToken.token == token) & (TriggerToken.expires_at > utcnow()))
        if old is not None:
            trigger = _with_version().where(Trigger.id == old.trigger_id).first()
    if trigger is None or not trigger.enabled:
        # The same answer for unknown and disabled: a token's existence is not leaked.
        raise ApiError(404, "unknown_hook", "no enabled webhook at this URL")
    return trigger


def accepted_secrets(trigger: Trigger, box: SecretBox, now: dt.datetime | None = None) -> list[str]:
    """The current verification secret and the previous ones still inside their rotation overlap."""
    verify = (trigger.config or {}).get("verify") or {}
    now = now or utcnow()
    found: list[str] = []
    if verify.get("secret_ref"):
        row = Secret.get_or_none((Secret.workspace == trigger.workspace_id) & (Secret.name == verify["secret_ref"]))
        if row is not None:
            found.append(box.decrypt(row.ciphertext))
    if verify.get("secret_ciphertext"):
        found.append(box.decrypt(verify["secret_ciphertext"]))
    if verify.get("secret"):  # written before secrets were encrypted in the trigger config
        found.append(verify["secret"])
    for old in verify.get("previous_secrets") or []:
        if dt.datetime.fromisoformat(old["expires_at"]) > now:
            found.append(box.decrypt(old["ciphertext"]))
    return found


# --- rate limits -----------------------------------------------------------------------------------

_limiters: dict[str, MovingWindowRateLimiter] = {}
_limiters_lock = threading.Lock()


def _limiter(redis_url: str | None) -> MovingWindowRateLimiter:
    """Memory storage in embedded mode; Redis when configured, so the limit holds across API processes."""
    uri = redis_url or "memory://"
    with _limiters_lock:
        if uri not in _limiters:
            _limiters[uri] = MovingWindowRateLimiter(storage_from_string(uri))
        return _limiters[uri]


def check_rate_limit(trigger: Trigger, redis_url: str | None) -> None:
    spec = (trigger.config or {}).get("rate_limit")
    if not spec:
        return
    item = parse_limit(spec)
    limiter = _limiter(redis_url)
    key = ("hookhub-trigger", str(trigger.id))
    try:
        if limiter.hit(item, *key):
            return
        reset = limiter.get_window_stats(item, *key).reset_time
    except Exception:
        # A limiter outage must not drop deliveries: accept (the database still records everything).
        log.warning("rate limiter unavailable; accepting the delivery", exc_info=True)
        return
    retry_after = max(1, math.ceil(reset - time.time()))
    raise ApiError(429, "rate_limited", f"this webhook accepts at most {spec}; retry in {retry_after} s",
                   headers={"Retry-After": str(retry_after)})


# --- accepting deliveries --------------------------------------------------------------------------


def log_refusal(trigger: Trigger, inbound: Inbound, status_code: int, error: str, *, keep_body: bool = True) -> None:
    """Write a refused delivery to the log (no run, no dedupe key) so senders' mistakes can be seen."""
    try:
        with write_transaction():
            Delivery.create(trigger=trigger.id, workspace=trigger.workspace_id, method=inbound.method,
                            headers=redact_headers(inbound.headers, trigger.config or {}), query=inbound.query,
                            body=inbound.body if keep_body else None, content_type=inbound.content_type,
                            status="rejected", status_code=status_code, error=error[:2000])
    except peewee.PeeweeException:
        log.exception("could not log a refused delivery")


def ingest(trigger: Trigger, inbound: Inbound, box: SecretBox | None = None) -> Accepted:
    """Verify, deduplicate, and commit the delivery with its run in one transaction."""
    config = trigger.config or {}
    if config.get("verify"):
        try:
            verify_request(config["verify"], inbound.headers, inbound.body,
                           accepted_secrets(trigger, box) if box else [config["verify"].get("secret") or ""])
        except VerifyError as exc:
            log_refusal(trigger, inbound, 401, f"{exc.code}: {exc.message}")
            raise ApiError(401, exc.code, exc.message, headers=exc.headers) from None
    body = parse_body(inbound.body, inbound.content_type)
    key = dedupe_key(config, inbound, body)
    headers = redact_headers(inbound.headers, config)
    trigger_data = {"body": body, "headers": headers, "query": inbound.query, "method": inbound.method}
    retention = float((config.get("dedupe") or {}).get("retention_seconds") or DEFAULT_DEDUPE_RETENTION)
    row = dict(trigger=trigger.id, workspace=trigger.workspace_id, method=inbound.method, headers=headers,
               query=inbound.query, body=inbound.body, content_type=inbound.content_type)
    if key is None:
        # Nothing to deduplicate against: commit together with whatever else is arriving.
        return _group_commit.submit(_Pending(trigger, trigger_data, row))
    existing = _existing_run(trigger.id, key, retention)
    if existing is not None:
        return _duplicate(row, key, existing)
    try:
        with write_transaction():
            first = Delivery.get_or_none((Delivery.trigger == trigger.id) & (Delivery.dedupe_key == key))
            if first is not None:
                if first.received_at >= utcnow() - dt.timedelta(seconds=retention):
                    raise _Seen(first.run_id)
                # Past the retention window the id may be used again: the old row keeps its history.
                Delivery.update(dedupe_key=None).where(Delivery.id == first.id).execute()
            accepted = _accept(trigger, trigger_data, row, key)
    except _Seen as seen:
        return _duplicate(row, key, seen.run_id)
    except peewee.IntegrityError:
        # A concurrent copy of the same delivery won the unique (trigger, dedupe_key) race.
        existing = _existing_run(trigger.id, key, None)
        if existing is None:
            raise
        return _duplicate(row, key, existing)
    return accepted


def _run_version(trigger: Trigger) -> FlowVersion:
    """The version found with the trigger (see :func:`find_trigger`), else read now."""
    fv = getattr(trigger.flow, "run_version", None) if "flow" in trigger.__rel__ else None
    if fv is not None and fv.id is not None:
        return fv
    return trigger.run_version()


def _accept(trigger: Trigger, trigger_data: dict, row: dict, key: str | None) -> Accepted:
    """The run and the accepted delivery; call inside a write transaction."""
    run, bells = create_run(_run_version(trigger), trigger_data, workspace_id=trigger.workspace_id,
                            trigger_id=trigger.id, source="webhook")
    delivery = Delivery.create(**row, dedupe_key=key, run=run.id, status="accepted", status_code=202)
    return Accepted(run.id, False, bells, delivery.id)


@dataclass
class _Pending:
    trigger: Trigger
    trigger_data: dict
    row: dict
    accepted: Accepted | None = None
    error: BaseException | None = None
    lead: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class GroupCommit:
    """Group commit for deliveries: concurrent requests of one process share one transaction.

    The first request to arrive commits what is queued by then (itself included) while the others
    wait; whoever queued meanwhile is committed next, by the first of them. Nobody waits for a timer:
    alone, a request commits at once. Each request still answers only after its own delivery and run
    are committed. Per delivery this leaves one run insert (for its id) plus a share of one node,
    one event and one delivery insert and of one commit — instead of six statements and a commit. If
    a batch fails, its deliveries are committed one by one, so one bad delivery fails only itself.
    """

    def __init__(self, max_batch: int = 32) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False
        #: committed batches and the deliveries in them (how much grouping happens)
        self.stats = {"batches": 0, "deliveries": 0}

    def submit(self, item: _Pending) -> Accepted:
        with self._lock:
            self._queue.append(item)
            item.lead = not self._busy
            self._busy = True
        if not item.lead:
            item.done.wait()  # answered, or made the next leader
        while item.lead:
            item.lead = False
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self._commit(batch)
            with self._lock:
                if self._queue:  # hand over to the first waiting request (or keep going if that is us)
                    self._queue[0].lead = True
                    if self._queue[0] is not item:
                        self._queue[0].done.set()
                else:
                    self._busy = False
        if item.error is not None:
            raise item.error
        assert item.accepted is not None
        return item.accepted

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with connection(), write_transaction():
                created = create_runs([NewRun(_run_version(p.trigger), p.trigger_data, p.trigger.workspace_id,
                                              p.trigger.id, "webhook") for p in batch])
                insert_rows(Delivery, [{**p.row, "dedupe_key": None, "run": run.id, "status": "accepted",
                                        "status_code": 202} for p, (run, _) in zip(batch, created, strict=True)])
            for p, (run, bells) in zip(batch, created, strict=True):
                p.accepted = Accepted(run.id, False, bells)
            self.stats["batches"] += 1
            self.stats["deliveries"] += len(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                log.warning("a batch of %d deliveries failed; committing them one by one", len(batch), exc_info=True)
                for p in batch:
                    try:
                        with connection(), write_transaction():
                            p.accepted = _accept(p.trigger, p.trigger_data, p.row, None)
                    except Exception as one:
                        p.error = one
        finally:
            for p in batch:
                p.done.set()


_group_commit = GroupCommit()


class _Seen(Exception):
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id


def _duplicate(row: dict, key: str, run_id: int) -> Accepted:
    """Answer with the original run, and log the repeat (it is the sender's retry: worth seeing)."""
    with write_transaction():
        d = Delivery.create(**row, dedupe_key=None, run=run_id, status="duplicate", status_code=202,
                            error=f"delivery id {key!r} was seen before")
    return Accepted(run_id, True, [], d.id)


def _existing_run(trigger_id: int, key: str, retention: float | None) -> int | None:
    query = Delivery.select(Delivery.run).where((Delivery.trigger == trigger_id) & (Delivery.dedupe_key == key))
    if retention is not None:
        query = query.where(Delivery.received_at >= utcnow() - dt.timedelta(seconds=retention))
    row = query.first()
    return row.run_id if row else None


# --- sync answers ----------------------------------------------------------------------------------


def wait_for_run(run_id: int, timeout: float, waker: Waker | None = None) -> Run | None:
    """Wait until the run finishes or the timeout passes (sync webhooks): look again whenever
    ``waker`` says a worker finished a task (scale-out: Redis pub/sub), and every 10 ms at most."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    seen = waker.generation if waker is not None else 0
    while True:
        with connection():
            run = _RUN_BY_ID.first(id=run_id)
        if run is None:
            raise Run.DoesNotExist(f"run {run_id} is gone")
        if run.status not in (RunStatus.RUNNING.value, RunStatus.PAUSED.value):
            return run
        if time.monotonic() >= deadline:
            return None
        step = min(delay, max(0.0, deadline - time.monotonic()))
        if waker is not None:
            seen = waker.wait(seen, step)
        else:
            time.sleep(step)
        # a primary-key read every 10 ms at most: a longer step would add up to its length to
        # every sync answer (measured: the 10-node chain p50 fell from 114 to 97 ms)
        delay = min(delay * 1.5, 0.01)


def sync_answer(run_id: int, timeout: float, waker: Waker | None = None) -> tuple[int, Any]:
    """What a sync webhook answers: 200 with the flow's output when the run succeeded; 502 ``run_failed``
    when it failed; 409 ``run_cancelled`` when it was cancelled; 202 with the run id when it is still
    going after ``timeout`` seconds (the run goes on; poll ``GET /api/v1/runs/{id}``)."""
    run = wait_for_run(run_id, timeout, waker)
    if run is None:
        return 202, {"run_id": run_id, "status": "running",
                     "message": f"the run did not finish within {timeout:g} s; it goes on"}
    if run.status == RunStatus.SUCCEEDED.value:
        return 200, run.output if run.output is not None else {"run_id": run_id, "status": run.status}
    if run.status == RunStatus.CANCELLED.value:
        return 409, {"status": 409, "code": "run_cancelled", "message": "the run was cancelled", "run_id": run_id}
    return 502, {"status": 502, "code": "run_failed", "message": f"the flow failed: {run.error or 'see the run'}",
                 "run_id": run_id}
