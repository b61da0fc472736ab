"""Starting runs and reading them back."""

from __future__ import annotations

from typing import Any

from hub.db import write_transaction
from hub.models import Attempt, Flow, NodeRun, Run
from hub.runtime import Doorbell, create_run
from hub.services.flows import get_version


def start_manual_run(flow: Flow, payload: Any, *, version: int | None = None) -> tuple[Run, list[Doorbell]]:
    trigger_data = {"body": payload, "headers": {}, "query": {}, "method": "MANUAL"}
    with write_transaction():
        fv = get_version(flow, version)
        return create_run(fv, trigger_data, workspace_id=flow.workspace_id, source="manual")


def _ts(value) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "trigger_id": run.trigger_id,
        "source": run.source,
        "status": run.status,
        "error": run.error,
        "created_at": _ts(run.created_at),
        "finished_at": _ts(run.finished_at),
    }


def run_detail(run: Run) -> dict[str, Any]:
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in Attempt.select().where(Attempt.run == run.id).order_by(Attempt.node_id, Attempt.number):
        attempts.setdefault(a.node_id, []).append(
            {"number": a.number, "status": a.status, "key": a.key, "error": a.error,
             "started_at": _ts(a.started_at), "finished_at": _ts(a.finished_at),
             "duration_ms": a.duration_ms}
        )
    nodes = [
        {
            "id": nr.node_id,
            "status": nr.status,
            "attempts": nr.attempts,
            "output": nr.output,
            "error": nr.error,
            "next_attempt_at": _ts(nr.due_at) if nr.status == "retrying" else None,
            "started_at": _ts(nr.started_at),
            "finished_at": _ts(nr.finished_at),
            "attempt_history": attempts.get(nr.node_id, []),
        }
        for nr in NodeRun.select().where(NodeRun.run == run.id).order_by(NodeRun.id)
    ]
    return {**run_summary(run), "output": run.output, "trigger": run.trigger_data, "nodes": nodes}
