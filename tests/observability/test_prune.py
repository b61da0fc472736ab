"""Retention: old finished runs, their events and deliveries go; running runs stay; `hookhub prune`."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from hub.config import ConfigError
from hub.models import Delivery, Flow, NodeRun, Run, RunEvent, Trigger, Workspace, utcnow
from hub.services import flows as flow_service
from hub.services.prune import Retention, prune, retention_from_env
from hub.services.runs import start_manual_run

DOC = {"name": "one", "nodes": [{"id": "t", "connector": "transform", "config": {"value": 1}}]}


def _runs(hub, ws: int, n: int, *, age_days: float, status: str = "succeeded") -> list[int]:
    flow = Flow.get_or_none(Flow.workspace == ws) or flow_service.create_flow(
        ws, DOC, hub.registry)
    ids = []
    for _ in range(n):
        run, _ = start_manual_run(flow, {})
        when = utcnow() - dt.timedelta(days=age_days)
        Run.update(status=status, created_at=when, finished_at=when if status != "running" else None).where(
            Run.id == run.id).execute()
        ids.append(run.id)
    return ids


def test_prune_by_age_keeps_running_runs_and_recent_ones(any_hub):
    ws = Workspace.create(name="w").id
    old = _runs(any_hub, ws, 3, age_days=40)
    old_running = _runs(any_hub, ws, 1, age_days=40, status="running")
    recent = _runs(any_hub, ws, 2, age_days=1, status="failed")
    trigger = Trigger.create(workspace=ws, flow=Run.get_by_id(old[0]).flow_id, type="webhook", token="t1")
    Delivery.create(trigger=trigger, workspace=ws, method="POST", run=old[0],
                    received_at=utcnow() - dt.timedelta(days=40))
    Delivery.create(trigger=trigger, workspace=ws, method="POST", run=None,
                    received_at=utcnow() - dt.timedelta(days=40))
    Delivery.create(trigger=trigger, workspace=ws, method="POST", run=recent[0], received_at=utcnow())
    events_of_old = RunEvent.select().where(RunEvent.run.in_(old)).count()
    assert events_of_old > 0

    report = prune(Retention(days=30))
    assert (report.runs, report.deliveries, report.events) == (3, 2, events_of_old)
    assert {r.id for r in Run.select()} == set(old_running + recent)
    assert NodeRun.select().where(NodeRun.run.in_(old)).count() == 0
    assert RunEvent.select().where(RunEvent.run.in_(old)).count() == 0
    assert Delivery.select().count() == 1
    assert prune(Retention(days=30)).runs == 0  # idempotent


def test_prune_by_count_per_workspace(hub):
    a, b = Workspace.create(name="a").id, Workspace.create(name="b").id
    a_runs = _runs(hub, a, 5, age_days=0)
    b_runs = _runs(hub, b, 2, age_days=0)
    a_running = _runs(hub, a, 1, age_days=0, status="running")
    report = prune(Retention(days=0, max_runs=2), batch=2)
    assert report.runs == 3
    assert {r.id for r in Run.select()} == set(a_runs[-2:] + b_runs + a_running)


def test_retention_settings_are_checked():
    assert retention_from_env({}) == Retention(days=30.0, max_runs=0)
    assert retention_from_env({"HOOKHUB_RETENTION_DAYS": "7", "HOOKHUB_RETENTION_MAX_RUNS": "1000"}) == Retention(
        7.0, 1000)
    with pytest.raises(ConfigError, match="HOOKHUB_RETENTION_DAYS"):
        retention_from_env({"HOOKHUB_RETENTION_DAYS": "soon"})
    with pytest.raises(ConfigError, match="HOOKHUB_RETENTION_MAX_RUNS"):
        retention_from_env({"HOOKHUB_RETENTION_MAX_RUNS": "-1"})


def test_hookhub_prune_command(hub, sqlite_backend):
    ws = Workspace.create(name="w").id
    _runs(hub, ws, 2, age_days=10)
    keep = _runs(hub, ws, 1, age_days=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKHUB_")} | sqlite_backend.env
    out = subprocess.run([sys.executable, "-m", "hub.cli", "prune", "--days", "5"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["runs"] == 2
    assert [r.id for r in Run.select()] == keep
    bad = subprocess.run([sys.executable, "-m", "hub.cli", "prune"], env=env | {"HOOKHUB_RETENTION_DAYS": "x"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "HOOKHUB_RETENTION_DAYS" in bad.stderr and "Traceback" not in bad.stderr
