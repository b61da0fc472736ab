"""Flow management beyond create/update: duplicate and per-flow statistics."""

from __future__ import annotations

import statistics
from typing import Any

import peewee

from hub.api.errors import ApiError
from hub.models import Flow, Run, iso
from hub.services import flows as flow_service

#: durations are summarised over at most this many of the most recent finished runs
STATS_WINDOW = 10_000


def duplicate_flow(source: Flow, name: str | None, catalog) -> Flow:
    doc = dict(flow_service.get_version(source).document)
    candidates = [name] if name else [f"{source.name} (copy)"] + [f"{source.name} (copy {i})" for i in range(2, 100)]
    for candidate in candidates:
        if len(candidate) > 200:
            break
        if not Flow.select().where((Flow.workspace == source.workspace_id) & (Flow.name == candidate)).exists():
            return flow_service.create_flow(source.workspace_id, doc | {"name": candidate}, catalog)
    raise ApiError(409, "flow_exists", f'a flow named "{candidates[0]}" already exists in this workspace; '
                   "give the copy another name", {"name": ["already taken"]})



def flow_stats(flow: Flow) -> dict[str, Any]:
    counts = {row.status: row.n for row in Run.select(Run.status, peewee.fn.COUNT(Run.id).alias("n"))
              .where(Run.flow == flow.id).group_by(Run.status)}
    finished = (Run.select(Run.created_at, Run.finished_at)
                .where((Run.flow == flow.id) & Run.finished_at.is_null(False))
                .order_by(Run.id.desc()).limit(STATS_WINDOW))
    durations = sorted(max(0.0, (r.finished_at - r.created_at).total_seconds() * 1000) for r in finished)
    last = Run.select(peewee.fn.MAX(Run.created_at)).where(Run.flow == flow.id).scalar()

    def pct(p: float) -> float | None:
        if not durations:
            return None
        return round(durations[min(len(durations) - 1, int(p * len(durations)))], 3)

    return {
        "flow_id": flow.id,
        "runs": {"total": sum(counts.values()), "by_status": counts},
        "durations": {
            "count": len(durations),
            "min_ms": round(durations[0], 3) if durations else None,
            "mean_ms": round(statistics.fmean(durations), 3) if durations else None,
            "p50_ms": pct(0.5), "p95_ms": pct(0.95),
            "max_ms": round(durations[-1], 3) if durations else None,
        },
        "last_run_at": iso(last) if last and not isinstance(last, str) else last,
    }
