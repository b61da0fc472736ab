"""Server-Sent Event streams tailing the durable run event log (``run_event``).

Nothing is streamed from memory: a stream re-reads the table after its cursor, so a client that
reconnects with ``Last-Event-ID`` gets every event after that id exactly once, in order.

Per run, the event ``id`` is the run's ``seq``. A run's events are written under the run's lock
(PostgreSQL ``FOR UPDATE``; SQLite serialises every writer), so seq order is commit order and
"``seq > last``" can never skip a late commit.

Per workspace, the event ``id`` is the global ``run_event.id``. On PostgreSQL ids come from a
sequence at insert time, so a transaction that took id 41 may commit after one that took id 42: a
naive "``id > last``" tail would step over 41 forever. The tail therefore never moves past a *gap*
(a missing id) until the gap has *settled*: it has been seen missing for ``settle_seconds``, or the
row after it is older than ``old_gap_seconds`` (rolled-back inserts, other rows pruned). Events of the
runtime are inserted at the very end of their transaction, so a gap normally closes within
milliseconds. Rows of other workspaces advance the cursor without being sent.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

from hub.db import connection
from hub.models import Run, RunEvent, iso, utcnow
from hub.services.live import Waker

TERMINAL_RUN = ("succeeded", "failed", "cancelled")

__all__ = ["run_events", "workspace_events", "format_event", "latest_event_id"]



def event_doc(ev: RunEvent) -> dict[str, Any]:
    return {"id": ev.id, "run_id": ev.run_id, "seq": ev.seq, "type": ev.type, "node_id": ev.node_id,
            "data": ev.data, "created_at": iso(ev.created_at)}


def format_event(event_id: int | None, data: Any, event: str | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    # json.dumps never emits a raw newline, so one data line is always enough
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return "\n".join(lines) + "\n\n"


class _Pacer:
    """Heartbeats (a comment line every ``heartbeat`` s of silence) and waiting for the next look."""

    def __init__(self, waker: Waker, poll_seconds: float, heartbeat_seconds: float) -> None:
        self.waker = waker
        self.poll = poll_seconds
        self.heartbeat = heartbeat_seconds
        self.generation = waker.generation
        self.last_sent = time.monotonic()

    def sent(self) -> None:
        self.last_sent = time.monotonic()

    def beat(self) -> str | None:
        if time.monotonic() - self.last_sent >= self.heartbeat:
            self.last_sent = time.monotonic()
            return ": keepalive\n\n"
        return None

    def wait(self, timeout: float | None = None) -> None:
        self.generation = self.waker.wait(self.generation, self.poll if timeout is None else timeout)


def run_events(run_id: int, after_seq: int, waker: Waker, *, poll_seconds: float = 2.0,
               heartbeat_seconds: float = 15.0, batch: int = 500, follow: bool = True) -> Iterator[str]:
    """Stream one run's events after ``after_seq``. Ends with an ``end`` event once the run has
    finished and everything up to its end has been sent (or at once with ``follow=False``)."""
    pacer = _Pacer(waker, poll_seconds, heartbeat_seconds)
    yield "retry: 2000\n\n"
    while True:
        with connection():
            # the status first: a finished run's last events committed with it, so the read below sees them
            status = Run.select(Run.status).where(Run.id == run_id).scalar()
            events = list(RunEvent.select().where((RunEvent.run == run_id) & (RunEvent.seq > after_seq))
                          .order_by(RunEvent.seq).limit(batch))
        for ev in events:
            after_seq = ev.seq
            yield format_event(ev.seq, event_doc(ev))
        if events:
            pacer.sent()
            if len(events) == batch:
                continue
        if status is None or status in TERMINAL_RUN or not follow:
            yield format_event(None, {"run_id": run_id, "status": status, "last_seq": after_seq}, "end")
            return
        beat = pacer.beat()
        if beat:
            yield beat
        pacer.wait()


def latest_event_id() -> int:
    with connection():
        return RunEvent.select(RunEvent.id).order_by(RunEvent.id.desc()).limit(1).scalar() or 0


def workspace_events(workspace_id: int, after_id: int, waker: Waker, *, poll_seconds: float = 2.0,
                     heartbeat_seconds: float = 15.0, settle_seconds: float = 2.0,
                     old_gap_seconds: float = 30.0, batch: int = 500,
                     run_ids: set[int] | None = None) -> Iterator[str]:
    """Stream every run event of a workspace after the global event id ``after_id``."""
    pacer = _Pacer(waker, poll_seconds, heartbeat_seconds)
    gaps: dict[int, float] = {}  # first missing id -> when this stream first saw it missing
    yield "retry: 2000\n\n"
    while True:
        with connection():
            rows = list(
                RunEvent.select(RunEvent, Run.workspace.alias("ws_id"))
                .join(Run, on=(RunEvent.run == Run.id))
                .where(RunEvent.id > after_id)
                .order_by(RunEvent.id)
                .limit(batch)
                .objects()
            )
        blocked = False
        sent = False
        now = time.monotonic()
        for row in rows:
            if row.id != after_id + 1:
                first_seen = gaps.setdefault(after_id + 1, now)
                old = row.created_at < utcnow() - dt.timedelta(seconds=old_gap_seconds)
                if not old and now - first_seen < settle_seconds:
                    blocked = True  # an earlier id may still commit: wait before stepping over it
                    break
            after_id = row.id
            if row.ws_id == workspace_id and (run_ids is None or row.run_id in run_ids):
                yield format_event(row.id, event_doc(row))
                sent = True
        for key in [k for k in gaps if k <= after_id]:
            del gaps[key]
        if sent:
            pacer.sent()
        if len(rows) == batch and not blocked:
            continue
        beat = pacer.beat()
        if beat:
            yield beat
        pacer.wait(min(0.2, pacer.poll) if blocked else None)
