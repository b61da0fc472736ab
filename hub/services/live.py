"""Live updates: wake event-log tailers early after a commit. Never a source of truth.

The run event log (``run_event``) is what streams read; this module only shortens the wait between a
commit and a tailer noticing it:

- in scale-out (``HOOKHUB_REDIS_URL``) a worker publishes the run id on :data:`CHANNEL` after each task
  (its transactions have committed by then) and every API process has one subscriber that wakes its
  streams;
- without Redis (embedded), a worker rings the ``live`` doorbell (:mod:`hub.doorbell`) after each task
  and every API process waits on it, looking at ``max(run_event.id)`` too whenever no ring came for a while.

Either way each stream also re-reads the log on its own every few seconds, so a lost wake-up (a Redis
restart, an event committed late with a lower id) only costs latency, never an event.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huey import Huey

    from hub.core import Hub
    from hub.doorbell import Doorbells

log = logging.getLogger("hookhub.live")

CHANNEL = "hookhub:run-events"

__all__ = ["CHANNEL", "Waker", "announce", "instrument", "waker_for"]


class Waker:
    """One per process: a generation counter streams wait on, bumped whenever something may be new."""

    def __init__(self, redis_url: str | None, poll_seconds: float = 0.25, doorbells: Doorbells | None = None) -> None:
        self.redis_url = redis_url
        self.doorbells = doorbells
        self.poll_seconds = poll_seconds
        self._cond = threading.Condition()
        self._generation = 0
        self._started = False
        #: the poller has ended: :meth:`stop`, or its hub closed its doorbells (see :func:`waker_for`)
        self.stopped = False
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def stop(self) -> None:
        """End the database poller (within ``poll_seconds``); waiters wake once and poll on their own."""
        self.stopped = True
        self.wake()

    def wake(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the generation passes ``seen`` or ``timeout`` elapses; return the generation."""
        self.start()
        with self._cond:
            if self._generation == seen:
                self._cond.wait(timeout)
            return self._generation

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        target = self._listen if self.redis_url else self._poll
        # under gevent (the API server) threading is monkey-patched: this is a greenlet
        threading.Thread(target=target, name="hookhub-live", daemon=True).start()

    def _listen(self) -> None:
        import redis

        while True:
            try:
                client = redis.Redis.from_url(self.redis_url, socket_keepalive=True)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self.wake()
            except Exception as exc:  # Redis down: streams still poll on their own
                log.warning("live updates: Redis subscription lost (%s); retrying", exc)
                self.wake()
                time.sleep(1.0)

    def _poll(self) -> None:
        from hub.db import connection, db

        last = None
        while not self.stopped:
            try:
                with connection():
                    value = db.execute_sql("SELECT MAX(id) FROM run_event").fetchone()[0]
                if value != last:
                    last = value
                    self.wake()
            except Exception as exc:
                log.debug("live updates: poll failed: %s", exc)
            if self.doorbells is None:
                time.sleep(self.poll_seconds)
                continue
            try:
                while self.doorbells.wait("live", self.poll_seconds):  # rung: a worker committed something
                    self.wake()
            except (OSError, ValueError) as exc:  # ValueError: the socket closed under select()
                if self.doorbells.closed:
                    # Its hub closed: stop polling a database that is no longer its own (a process
                    # that opens hubs one after another, as the tests do, would gather pollers).
                    self.stop()
                    return
                log.debug("live updates: doorbell failed: %s", exc)  # no doorbell here: the poll alone
                time.sleep(self.poll_seconds)


_wakers: dict[tuple[str | None, Any], Waker] = {}
_wakers_lock = threading.Lock()


def waker_for(redis_url: str | None, huey: Huey | None = None) -> Waker:
    """This process's waker: Redis pub/sub in scale-out, the queue's local doorbells when embedded."""
    doorbells = getattr(getattr(huey, "storage", None), "doorbells", None) if not redis_url else None
    key = (redis_url, doorbells.dir if doorbells is not None else None)
    with _wakers_lock:
        if key not in _wakers or _wakers[key].stopped:
            _wakers[key] = Waker(redis_url, doorbells=doorbells)
        return _wakers[key]


def announce(huey: Huey, run_id: Any) -> None:
    """Tell API processes that ``run_id`` has new committed events (best effort)."""
    storage = getattr(huey, "storage", None)
    doorbells = getattr(storage, "doorbells", None)
    if doorbells is not None:  # embedded
        doorbells.ring("live")
        return
    conn = getattr(storage, "conn", None)
    if conn is None or not hasattr(conn, "publish"):
        return
    try:
        conn.publish(CHANNEL, str(run_id))
    except Exception as exc:
        log.debug("live updates: publish failed: %s", exc)


def instrument(huey: Huey, hub: Hub | None = None) -> None:
    """Huey signal handlers for a worker: log context (run_id, node_id) while a task runs, and a
    wake-up for live streams after it finished (its transactions are committed by then)."""
    from huey import signals

    from hub.logs import bind_context, clear_context

    def _ids(task) -> tuple[Any, Any]:
        args = tuple(getattr(task, "args", None) or ())
        return (args[0] if args else None, args[1] if len(args) > 1 else None)

    @huey.signal(signals.SIGNAL_EXECUTING)
    def _executing(signal, task, *args):
        run_id, node_id = _ids(task)
        bind_context(run_id=run_id, node_id=node_id)

    @huey.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR, signals.SIGNAL_INTERRUPTED,
                 signals.SIGNAL_CANCELED)
    def _done(signal, task, *args):
        run_id, _ = _ids(task)
        clear_context()
        if run_id is not None:
            announce(huey, run_id)
