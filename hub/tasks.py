"""The Huey queue (SQLite embedded, Redis in scale-out) and its thin tasks.

A message only says "look at node N of run R" (a doorbell); everything it refers to is already
committed. Huey's own retries are never used: retries are the engine's decision, stored as rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from huey import Huey
from huey.constants import EmptyData
from huey.storage import RedisStorage

from hub.config import Settings
from hub.doorbell import Doorbells, DoorbellSqliteStorage

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.runtime import Doorbell

log = logging.getLogger("hookhub.tasks")

__all__ = ["make_huey", "register_tasks", "ring"]

#: how long one queue message may keep following its run's chain before handing the next node to the
#: queue (fairness between runs, and a bound on how long a graceful shutdown waits)
INLINE_MAX_NODES = 64
INLINE_MAX_SECONDS = 0.5

_REVOKE_KEYS = ("r:", "rt:")  # huey's revoke flags: 'r:<task id>' and 'rt:<task name>'


class _NoRevocations:
    """Hookhub never revokes a Huey task (a run is cancelled by a committed row, which every attempt
    checks). Huey still reads a task's revoke flags before running it and clears them afterwards: two
    queue round trips per node (on SQLite one of them a write transaction, ≈ 10 % of an embedded
    worker's time). With no flag ever written, both are answered here without asking the queue."""

    def put_data(self, key: str, value: Any, is_result: bool = False) -> Any:
        if key.startswith(_REVOKE_KEYS):
            raise NotImplementedError("Hookhub does not revoke queue messages: cancel the run instead")
        return super().put_data(key, value, is_result)  # type: ignore[misc]

    def peek_many(self, keys: list[str]) -> dict[str, Any]:
        if all(key.startswith(_REVOKE_KEYS) for key in keys):
            return {}
        return super().peek_many(keys)  # type: ignore[misc]

    def pop_data(self, key: str) -> Any:
        return EmptyData if key.startswith(_REVOKE_KEYS) else super().pop_data(key)  # type: ignore[misc]

    def delete_data(self, key: str) -> Any:
        return False if key.startswith(_REVOKE_KEYS) else super().delete_data(key)  # type: ignore[misc]


class EmbeddedStorage(_NoRevocations, DoorbellSqliteStorage):
    """Huey's SQLite queue, read blocking on a local doorbell (:mod:`hub.doorbell`)."""


class ScaleOutStorage(_NoRevocations, RedisStorage):
    """Huey's Redis queue."""


def make_huey(settings: Settings, *, immediate: bool = False) -> Huey:
    if settings.redis_url:
        return Huey("hookhub", storage_class=ScaleOutStorage, url=settings.redis_url, immediate=immediate,
                    results=False, utc=True, blocking=True, read_timeout=1)
    return Huey("hookhub", storage_class=EmbeddedStorage, filename=str(settings.queue_path),
                doorbells=Doorbells(settings.data_dir), immediate=immediate, results=False, utc=True, timeout=15)


def register_tasks(huey: Huey, hub: Hub) -> dict[str, object]:
    """Bind the tasks to this process's hub. The names are the wire format: never rename them."""

    from hub.services.live import announce, instrument  # observability (issue #8)

    @huey.task(name="execute_node")
    def execute_node(run_id: int, node_id: str) -> None:
        from hub.db import connection
        from hub.logs import bind_context
        from hub.runtime import execute_node as run_node

        started = time.monotonic()
        with connection():
            bells = run_node(run_id, node_id, hub.runtime)
            # Chains stay on this thread while they are quick: the successor's state is committed as
            # ready before it runs here, so a crash in between leaves it to the reaper, as a lost
            # message would. The rest of a fan-out goes to the queue for the other workers.
            for _ in range(INLINE_MAX_NODES):
                follow = next((b for b in bells if b.eta is None and b.run_id == run_id), None)
                if follow is None or time.monotonic() - started > INLINE_MAX_SECONDS:
                    break
                ring(huey, [b for b in bells if b is not follow], hub.tasks)
                announce(huey, run_id)  # live streams see each node, not only the last
                bind_context(run_id=run_id, node_id=follow.node_id)
                bells = run_node(run_id, follow.node_id, hub.runtime)
        ring(huey, bells, hub.tasks)

    instrument(huey, hub)
    return {"execute_node": execute_node}


def ring(huey: Huey, bells: Iterable[Doorbell], tasks: dict[str, object]) -> None:
    """Enqueue doorbells (after the transaction that created them has committed)."""
    task = tasks["execute_node"]
    for bell in bells:
        try:
            if bell.eta is None:
                task(bell.run_id, bell.node_id)
            else:
                task.schedule(args=(bell.run_id, bell.node_id), eta=bell.eta)
        except Exception:
            # The row is committed; a reaper will ring again. Never lose the caller's response.
            log.exception("could not enqueue run %s node %s; the reaper will retry", bell.run_id,
                          bell.node_id)
