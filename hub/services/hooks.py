"""Inbound webhooks: verify, deduplicate, commit the delivery and its run, then acknowledge."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import peewee

from hub.api.errors import ApiError
from hub.db import connection, write_transaction
from hub.engine import RunStatus
from hub.models import Delivery, Flow, FlowVersion, Run, Trigger
from hub.runtime import Doorbell, create_run

DEFAULT_MAX_BODY = 1 << 20
REDACTED_HEADERS = {"authorization", "cookie", "x-api-key", "proxy-authorization"}


@dataclass
class Inbound:
    method: str
    headers: dict[str, str]
    query: dict[str, Any]
    body: bytes
    content_type: str | None


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


def dedupe_key(config: dict, inbound: Inbound, body: Any) -> str | None:
    rule = config.get("dedupe") or {}
    if rule.get("header"):
        return inbound.headers.get(rule["header"].lower())
    if rule.get("json_path"):
        value = _json_path(body, rule["json_path"])
        return None if value is None else str(value)[:255]
    return None


def find_trigger(token: str) -> Trigger:
    trigger = Trigger.get_or_none((Trigger.token == token) & (Trigger.type == "webhook"))
    if trigger is None or not trigger.enabled:
        # The same answer for unknown and disabled: a token's existence is not leaked.
        raise ApiError(404, "unknown_hook", "no enabled webhook at this URL")
    return trigger


def ingest(trigger: Trigger, inbound: Inbound) -> tuple[int, bool, list[Doorbell]]:
    """Commit the delivery and its run in one transaction. Returns (run id, duplicate?, bells)."""
    config = trigger.config or {}
    body = parse_body(inbound.body, inbound.content_type)
    if config.get("verify"):
        from hub.services.verify import verify_request

        verify_request(config["verify"], inbound)
    key = dedupe_key(config, inbound, body)
    headers = {k: ("***" if k in REDACTED_HEADERS else v) for k, v in inbound.headers.items()}
    trigger_data = {"body": body, "headers": headers, "query": inbound.query, "method": inbound.method}
    if key is not None:
        existing = _existing_run(trigger.id, key)
        if existing is not None:
            return existing, True, []
    try:
        with write_transaction():
            version = trigger.flow_version or Flow.get_by_id(trigger.flow_id).latest_version
            fv = FlowVersion.get((FlowVersion.flow == trigger.flow_id) & (FlowVersion.version == version))
            run, bells = create_run(fv, trigger_data, workspace_id=trigger.workspace_id,
                                    trigger_id=trigger.id, source="webhook")
            Delivery.create(trigger=trigger.id, workspace=trigger.workspace_id, method=inbound.method,
                            headers=headers, query=inbound.query, body=inbound.body,
                            content_type=inbound.content_type, dedupe_key=key, run=run.id)
    except peewee.IntegrityError:
        # A concurrent copy of the same delivery won the unique (trigger, dedupe_key) race.
        existing = _existing_run(trigger.id, key) if key is not None else None
        if existing is None:
            raise
        return existing, True, []
    return run.id, False, bells


def _existing_run(trigger_id: int, key: str) -> int | None:
    row = (Delivery.select(Delivery.run).where((Delivery.trigger == trigger_id) & (Delivery.dedupe_key == key))
           .first())
    return row.run_id if row else None


def wait_for_run(run_id: int, timeout: float) -> Run | None:
    """Poll until the run finishes or the timeout passes (sync webhooks)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        with connection():
            run = Run.get_by_id(run_id)
        if run.status not in (RunStatus.RUNNING.value, RunStatus.PAUSED.value):
            return run
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.05)
