"""Retention: delete old finished runs (with their nodes, attempts and events) and old deliveries.

- ``HOOKHUB_RETENTION_DAYS`` (default 30; 0 turns age pruning off): finished runs whose ``finished_at``
  is older, and deliveries received before then whose run is gone or finished.
- ``HOOKHUB_RETENTION_MAX_RUNS`` (default 0 = no limit): per workspace, keep at most this many finished
  runs, the newest ones.

Runs that are still going (running, paused) are never pruned, whatever their age. Deletes go in
small batches, each its own short transaction, so a big backlog never holds SQLite's write lock for
long; a run's node runs, attempts, events and dead letters go with it (ON DELETE CASCADE).
``hookhub prune`` runs it once; ``hookhub scheduler`` every few minutes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from hub.config import ConfigError
from hub.db import connection, write_transaction
from hub.models import Delivery, Run, RunEvent, utcnow

log = logging.getLogger("hookhub.prune")

FINISHED = ("succeeded", "failed", "cancelled")
INTERVAL_SECONDS = 300.0

__all__ = ["PruneReport", "Retention", "prune", "retention_from_env"]


@dataclass(frozen=True)
class Retention:
    days: float = 30.0
    max_runs: int = 0


@dataclass
class PruneReport:
    runs: int = 0
    deliveries: int = 0
    events: int = 0


def retention_from_env(env: Mapping[str, str] | None = None) -> Retention:
    env = os.environ if env is None else env

    def number(name: str, default: float, cast):
        raw = (env.get(name) or "").strip()
        if not raw:
            return default
        try:
            value = cast(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
        if value < 0:
            raise ConfigError(f"{name}: must be at least 0, got {raw!r}")
        return value

    return Retention(days=number("HOOKHUB_RETENTION_DAYS", 30.0, float),
                     max_runs=number("HOOKHUB_RETENTION_MAX_RUNS", 0, int))


def _delete_runs(ids: list[int], report: PruneReport) -> None:
    with write_transaction():
        report.events += RunEvent.delete().where(RunEvent.run.in_(ids)).execute()
        report.deliveries += Delivery.delete().where(Delivery.run.in_(ids)).execute()
        report.runs += Run.delete().where(Run.id.in_(ids)).execute()


def prune(retention: Retention | None = None, *, now: dt.datetime | None = None, batch: int = 200) -> PruneReport:
    """Apply the retention policy once. Safe to run in several processes at the same time."""
    retention = retention or retention_from_env()
    now = now or utcnow()
    report = PruneReport()
    with connection():
        if retention.days > 0:
            cutoff = now - dt.timedelta(days=retention.days)
            while True:
                ids = [r.id for r in Run.select(Run.id).where(
                    Run.status.in_(FINISHED) & (Run.finished_at < cutoff)).order_by(Run.id).limit(batch)]
                if not ids:
                    break
                _delete_runs(ids, report)
            while True:
                old = Delivery.select(Delivery.id).where(
                    (Delivery.received_at < cutoff)
                    & (Delivery.run.is_null() | Delivery.run.in_(Run.select(Run.id).where(Run.status.in_(FINISHED))))
                ).limit(batch)
                ids = [d.id for d in old]
                if not ids:
                    break
                with write_transaction():
                    report.deliveries += Delivery.delete().where(Delivery.id.in_(ids)).execute()
        if retention.max_runs > 0:
            workspaces = [r.workspace_id for r in Run.select(Run.workspace).where(Run.status.in_(FINISHED))
                          .group_by(Run.workspace)]
            for ws in workspaces:
                while True:
                    keep_from = (Run.select(Run.id).where((Run.workspace == ws) & Run.status.in_(FINISHED))
                                 .order_by(Run.id.desc()).offset(retention.max_runs).limit(1).scalar())
                    if keep_from is None:
                        break
                    ids = [r.id for r in Run.select(Run.id).where(
                        (Run.workspace == ws) & Run.status.in_(FINISHED) & (Run.id <= keep_from))
                        .order_by(Run.id).limit(batch)]
                    _delete_runs(ids, report)
    if report.runs or report.deliveries:
        log.info("pruned %d runs (%d events) and %d deliveries", report.runs, report.events, report.deliveries)
    return report
