"""Prometheus metrics derived from the database at scrape time.

Why not per-process counters: a hub is any number of API, worker and scheduler processes on any
number of machines. Counters kept in process memory would each see a slice, reset on every restart,
and need a multiprocess directory shared by processes that may not share a disk. The database already
holds every fact (ARCHITECTURE.md), so one scrape of any API process answers for the whole hub,
correct by construction. The price is a handful of aggregate queries per scrape over retained rows
(bounded by retention, see :mod:`hub.services.prune`).

Counts are gauges ("rows that exist now, by status") rather than counters: pruning removes rows, and
a counter that goes down would read as a reset. Use ``delta()``/``deriv()`` over them, or the run and
attempt counts' growth, for rates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from hub.db import connection, db, is_postgres
from hub.engine import NodeStatus, RunStatus

__all__ = ["DURATION_BUCKETS", "SANDBOX_KILL_REASONS", "HubCollector", "render_metrics"]

#: seconds; attempt durations are stored in milliseconds
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: error kinds (sandbox ``Result.error_kind``) that mean the sandbox stopped the attempt
SANDBOX_KILL_REASONS = ("timeout", "memory", "output_too_large", "crashed")
DELIVERY_STATUSES = ("accepted",)
ATTEMPT_STATUSES = ("running", "succeeded", "failed", "lost", "cancelled")


def _counts(sql: str, known: Iterable[str] = ()) -> dict[str, float]:
    counts = {k: 0.0 for k in known}
    for key, count in db.execute_sql(sql).fetchall():
        counts[str(key)] = float(count)
    return counts


def _gauge(name: str, doc: str, label: str, counts: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key in sorted(counts):
        family.add_metric([key], counts[key])
    return family


class HubCollector(Collector):
    """Reads the hub's state when Prometheus scrapes; ``queue`` reports the Huey queue's depth."""

    def __init__(self, queue: Callable[[], dict[str, float]] | None = None) -> None:
        self.queue = queue

    def collect(self) -> Iterable[Any]:
        with connection():
            yield from self._database_metrics()
        if self.queue is not None:
            depth = GaugeMetricFamily("hookhub_queue_depth", "Messages in the Huey queue (shared by all "
                                      "workers): ready to dequeue, or scheduled for later (retries)",
                                      labels=["state"])
            for state, value in self.queue().items():
                depth.add_metric([state], value)
            yield depth

    def _database_metrics(self) -> Iterable[Any]:
        yield _gauge("hookhub_runs", "Runs by status (retained rows)", "status",
                     _counts("SELECT status, COUNT(*) FROM run GROUP BY status", [s.value for s in RunStatus]))
        yield _gauge("hookhub_nodes", "Node runs by status (ready and retrying are waiting to be attempted)",
                     "status", _counts("SELECT status, COUNT(*) FROM node_run GROUP BY status",
                                       [s.value for s in NodeStatus]))
        yield _gauge("hookhub_deliveries", "Inbound webhook deliveries by status (retained rows)", "status",
                     _counts("SELECT status, COUNT(*) FROM delivery GROUP BY status", DELIVERY_STATUSES))
        yield _gauge("hookhub_attempts", "Node attempts by status", "status",
                     _counts("SELECT status, COUNT(*) FROM attempt GROUP BY status", ATTEMPT_STATUSES))

        retries = GaugeMetricFamily("hookhub_node_retries", "Attempts that were retries (attempt number > 1)")
        retries.add_metric([], float(db.execute_sql("SELECT COUNT(*) FROM attempt WHERE number > 1")
                                     .fetchone()[0]))
        yield retries

        kind = "error->>'kind'" if is_postgres() else "json_extract(error, '$.kind')"
        reasons = ", ".join(f"'{r}'" for r in SANDBOX_KILL_REASONS)
        yield _gauge(
            "hookhub_sandbox_kills", "Attempts the sandbox stopped, by reason", "reason",
            _counts(f"SELECT {kind} AS k, COUNT(*) FROM attempt WHERE status = 'failed' AND error IS NOT NULL "
                    f"AND {kind} IN ({reasons}) GROUP BY k", SANDBOX_KILL_REASONS))

        if db.table_exists("dead_letter"):
            yield _gauge("hookhub_dead_letters", "Dead letters (nodes given up on) by status", "status",
                         _counts("SELECT status, COUNT(*) FROM dead_letter GROUP BY status", ("open",)))

        yield self._durations()

    def _durations(self) -> HistogramMetricFamily:
        le = ", ".join(f"SUM(CASE WHEN duration_ms <= {b * 1000!r} THEN 1 ELSE 0 END)" for b in DURATION_BUCKETS)
        rows = db.execute_sql(
            f"SELECT status, {le}, COUNT(*), COALESCE(SUM(duration_ms), 0) FROM attempt "
            "WHERE duration_ms IS NOT NULL AND status IN ('succeeded', 'failed') GROUP BY status"
        ).fetchall()
        family = HistogramMetricFamily("hookhub_node_duration_seconds",
                                       "Duration of finished node attempts (from attempt rows)",
                                       labels=["status"])
        by_status = {row[0]: row for row in rows}
        for status in ("succeeded", "failed"):
            row = by_status.get(status)
            if row is None:
                row = (status, *([0] * len(DURATION_BUCKETS)), 0, 0)
            cumulative = [(repr(b), float(row[1 + i] or 0)) for i, b in enumerate(DURATION_BUCKETS)]
            total = float(row[1 + len(DURATION_BUCKETS)] or 0)
            cumulative.append(("+Inf", total))
            family.add_metric([status], cumulative, sum_value=float(row[-1] or 0) / 1000.0)
        return family


def render_metrics(queue: Callable[[], dict[str, float]] | None = None) -> bytes:
    """The Prometheus text exposition of the hub's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(queue))
    return generate_latest(registry)
