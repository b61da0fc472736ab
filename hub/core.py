"""One process's view of the hub: settings, database, connectors, queue and sandboxes."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

from hub.config import Settings
from hub.crypto import SecretBox
from hub.db import connection, open_database
from hub.plugins import Registry, get_registry
from hub.runtime import Doorbell, RuntimeConfig, reap
from hub.tasks import make_huey, register_tasks, ring

log = logging.getLogger("hookhub")


class Hub:
    def __init__(self, settings: Settings, *, registry: Registry | None = None, immediate: bool = False):
        self.settings = settings
        self.database = open_database(settings)
        self.registry = registry or get_registry()
        self.secret_box = SecretBox(settings.secret_key)
        self.huey = make_huey(settings, immediate=immediate)
        self.tasks = register_tasks(self.huey, self)
        self._sandboxes: dict[str, Any] = {}
        #: concurrent sandboxed attempts; the worker sets it to its --concurrency
        self.sandbox_slots = 4
        self._sandbox_lock = threading.Lock()
        self.runtime = RuntimeConfig(
            secret_box=self.secret_box,
            catalog=self.registry,
            sandbox_for=self.sandbox_for,
            allowed_private_networks=settings.allow_private_networks,
            default_timeout_seconds=settings.default_timeout_seconds,
            default_memory_mb=settings.default_memory_mb,
            max_timeout_seconds=settings.max_timeout_seconds,
            max_memory_mb=settings.max_memory_mb,
            lease_grace_seconds=settings.lease_grace_seconds,
            requeue_after_seconds=settings.requeue_after_seconds,
            worker_name=f"{socket.gethostname()}:{os.getpid()}",
        )

    # sandboxes are started lazily: an API process never needs one
    def sandbox_for(self, kind: str):
        with self._sandbox_lock:
            if kind not in self._sandboxes:
                if kind == "python":
                    from sandbox.process import ProcessSandbox

                    # Attempts must not see the hub's data (database, secret key) or local DB sockets.
                    hide = [str(self.settings.data_dir), "/var/run/postgresql", "/run/postgresql",
                            "/var/run/redis", "/run/redis"]
                    self._sandboxes[kind] = ProcessSandbox(
                        preload=self.registry.modules,
                        slots=self.sandbox_slots,
                        hide=[p for p in hide if os.path.exists(p)],
                    )
                elif kind == "wasm":
                    # WasmSandbox plus the `code` connector (CPython for WASI), which registers as a
                    # WASM connector with a marker module (connectors/_code_runtime.py)
                    from connectors._code_runtime import HubWasmSandbox

                    self._sandboxes[kind] = HubWasmSandbox(self.settings.data_dir / "wasm-cache")
                else:
                    raise ValueError(f"unknown sandbox kind {kind!r}")
            return self._sandboxes[kind]

    def ring(self, bells: Iterable[Doorbell]) -> None:
        """Enqueue after commit, and wake live streams of those runs (scale-out: Redis pub/sub)."""
        from hub.services.live import announce

        bells = list(bells)
        ring(self.huey, bells, self.tasks)
        for run_id in {bell.run_id for bell in bells}:
            announce(self.huey, run_id)

    def reap_once(self) -> None:
        try:
            queued = self.huey.pending_count()
        except Exception:  # the queue is down: ring what looks unclaimed, enqueueing will say more
            queued = None
        with connection():
            report = reap(self.runtime, queued=queued)
        if report.lost or report.rung:
            log.info("reaper: %d lost attempts, %d nodes rung again", report.lost, report.rung)
        self.ring(report.bells)

    def queue_ok(self) -> bool:
        try:
            self.huey.pending_count()
            return True
        except Exception:
            return False

    def close(self) -> None:
        for sandbox in self._sandboxes.values():
            try:
                sandbox.close()
            except Exception:
                log.exception("closing sandbox")
        self._sandboxes.clear()
        # Close the pool's idle connections only: one in use by another thread (a live-update
        # poller, say) must not be closed under it.
        close_idle = getattr(self.database, "close_idle", None)
        if close_idle is not None:
            close_idle()
        # The queue's local doorbells (embedded) and Redis connections (scale-out); SQLite's queue
        # connection closes with the process.
        doorbells = getattr(self.huey.storage, "doorbells", None)
        if doorbells is not None:
            doorbells.close()
        pool = getattr(self.huey.storage, "pool", None)
        if pool is not None and hasattr(pool, "disconnect"):
            pool.disconnect()
