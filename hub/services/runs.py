"""Starting runs and reading them back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hub import runtime
from hub.api.errors import ApiError
from hub.db import write_transaction
from hub.models import Attempt, DeadLetter, Flow, NodeRun, Run, iso
from hub.runtime import ControlError, Doorbell, create_run
from hub.services.flows import get_version


def start_manual_run(flow: Flow, payload: Any, *, version: int | None = None) -> tuple[Run, list[Doorbell]]:
    trigger_data = {"body": payload, "headers": {}, "query": {}, "method": "MANUAL"}
    with write_transaction():
        fv = get_version(flow, version)
        return create_run(fv, trigger_data, workspace_id=flow.workspace_id, source="manual")



def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "trigger_id": run.trigger_id,
        "source": run.source,
        "status": run.status,
        "error": run.error,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
    }


def run_detail(run: Run) -> dict[str, Any]:
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in Attempt.select().where(Attempt.run == run.id).order_by(Attempt.node_id, Attempt.number):
        attempts.setdefault(a.node_id, []).append(
            {"number": a.number, "status": a.status, "key": a.key, "worker": a.worker, "error": a.error,
             "started_at": iso(a.started_at), "finished_at": iso(a.finished_at),
             "duration_ms": a.duration_ms}
        )
    nodes = [
        {
            "id": nr.node_id,
            "status": nr.status,
            "attempts": nr.attempts,
            "output": nr.output,
            "error": nr.error,
            "next_attempt_at": iso(nr.due_at) if nr.status == "retrying" else None,
            "started_at": iso(nr.started_at),
            "finished_at": iso(nr.finished_at),
            "attempt_history": attempts.get(nr.node_id, []),
        }
        for nr in NodeRun.select().where(NodeRun.run == run.id).order_by(NodeRun.id)
    ]
    return {**run_summary(run), "output": run.output, "trigger": run.trigger_data, "nodes": nodes}


# --- run control (cancel, pause, resume, retry) and dead letters ------------------------------------


@contextlib.contextmanager
def _as_api_error() -> Iterator[None]:
    """A refused run-control action as an API answer: an unknown run or dead letter is a 404, any
    other refusal (wrong state, unknown node) a 409, each with the runtime's stable code."""
    try:
        yield
    except ControlError as exc:
        status = 404 if exc.code.endswith("_not_found") and exc.code != "node_not_found" else 409
        raise ApiError(status, exc.code, exc.message) from None


def cancel(run: Run, actor: str | None = None) -> Run:
    with _as_api_error():
        return runtime.cancel_run(run.id, actor=actor)


def pause(run: Run, actor: str | None = None) -> Run:
    with _as_api_error():
        return runtime.pause_run(run.id, actor=actor)


def resume(run: Run, actor: str | None = None) -> tuple[Run, list[Doorbell]]:
    with _as_api_error():
        return runtime.resume_run(run.id, actor=actor)


def retry(run: Run, nodes: list[str] | None = None, actor: str | None = None) -> tuple[Run, list[Doorbell]]:
    with _as_api_error():
        return runtime.retry_run(run.id, nodes, actor=actor)


def redrive(letter: DeadLetter, actor: str | None = None) -> tuple[DeadLetter, list[Doorbell]]:
    with _as_api_error():
        return runtime.redrive_dead_letter(letter.id, actor=actor)


def dead_letter_doc(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "flow_id": letter.flow_id,
        "run_id": letter.run_id,
        "node_id": letter.node_id,
        "attempts": letter.attempts,
        "error": letter.error,
        "status": letter.status,
        "created_at": iso(letter.created_at),
        "redriven_at": iso(letter.redriven_at),
    }
