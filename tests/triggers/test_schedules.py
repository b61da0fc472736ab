"""Schedule triggers: cron in a time zone, DST, one run per slot with several schedulers, misfires."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest

from hub.db import connection
from hub.models import Run, ScheduleSlot, Trigger, Workspace
from hub.scheduler import fire_due, next_fire_times, slots_between
from hub.services.flows import create_flow

D = dt.datetime
FLOW = {"name": "tick",
        "nodes": [{"id": "t", "connector": "transform", "config": {"value": "{{ trigger.scheduled_at }}"}}]}


def _schedule(hub, cron: str, tz: str = "Europe/Berlin", created: D = D(2026, 3, 27, 23, 0), **extra) -> Trigger:
    ws = Workspace.select().first() or Workspace.create(name="w")
    from hub.models import Flow

    flow = Flow.get_or_none(Flow.name == "tick") or create_flow(ws.id, FLOW, hub.registry)
    return Trigger.create(workspace=ws.id, flow=flow.id, type="schedule", created_at=created, updated_at=created,
                          config={"cron": cron, "timezone": tz, "payload": {"k": 1}, **extra})


def _slots(trigger: Trigger) -> list[D]:
    return [D.fromisoformat(r.trigger_data["scheduled_at"].rstrip("Z"))
            for r in Run.select().where(Run.trigger == trigger.id).order_by(Run.id)]


def test_two_schedulers_over_a_dst_change_fire_each_slot_once(any_hub):
    """Two threads drive fire_due(now) in lockstep over 2026-03-28..30 (Europe/Berlin: CET→CEST on the 29th
    at 02:00 local = 01:00 UTC), racing for every slot; each slot must produce exactly one run."""
    hourly = _schedule(any_hub, "0 * * * *")
    nightly = _schedule(any_hub, "30 2 * * *")
    quarter = _schedule(any_hub, "*/15 * * * *")
    start, end, step = D(2026, 3, 28, 0, 0), D(2026, 3, 30, 12, 0), dt.timedelta(minutes=5)
    steps = int((end - start) / step) + 1
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []
    fired = Counter()

    def scheduler(name: str, skew: dt.timedelta) -> None:
        try:
            with connection():
                for i in range(steps):
                    barrier.wait()  # both schedulers look at the same slot at the same moment
                    fired[name] += len(fire_due(start + i * step + skew))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=scheduler, args=("a", dt.timedelta(0))),
               threading.Thread(target=scheduler, args=("b", dt.timedelta(seconds=7)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert fired["a"] > 0 and fired["b"] > 0, f"one scheduler did all the work: {fired}"
    # The quarter-hour slots of 23:15..23:45 on the 27th were before the first scheduler pass: misfires,
    # skipped (the default policy) with one claim row that moves the cursor.
    skipped = ScheduleSlot.select().where(ScheduleSlot.status == "skipped")
    assert [s.slot_at for s in skipped] == [D(2026, 3, 27, 23, 45)]

    # Hourly: every UTC hour once — 23 local hours on the 29th, no gap and no double at the change.
    hours = _slots(hourly)
    assert hours == [D(2026, 3, 28, 0, 0) + dt.timedelta(hours=h) for h in range(len(hours))]
    assert hours[-1] == D(2026, 3, 30, 12, 0) and len(hours) == len(set(hours))
    # Nightly 02:30 local: 01:30 UTC (CET); on the 29th 02:30 does not exist → 03:30 CEST = 01:30 UTC;
    # on the 30th 02:30 CEST = 00:30 UTC.
    assert _slots(nightly) == [D(2026, 3, 28, 1, 30), D(2026, 3, 29, 1, 30), D(2026, 3, 30, 0, 30)]
    # Every 15 minutes keeps firing every 15 real minutes across the change, once each.
    quarters = _slots(quarter)
    assert quarters == [D(2026, 3, 28, 0, 0) + dt.timedelta(minutes=15 * i) for i in range(len(quarters))]
    assert quarters[-1] == D(2026, 3, 30, 12, 0)
    for trig in (hourly, nightly, quarter):
        claims = (ScheduleSlot.select()
                  .where((ScheduleSlot.trigger == trig.id) & (ScheduleSlot.status == "fired")).count())
        assert claims == Run.select().where(Run.trigger == trig.id).count()
    run = Run.select().where(Run.trigger == nightly.id).first()
    assert run.source == "schedule" and run.trigger_data["body"] == {"k": 1}


def test_fall_back_fires_a_fixed_time_once_and_an_hourly_in_both_hours():
    hourly = slots_between("0 * * * *", "Europe/Berlin", D(2026, 10, 24, 22), D(2026, 10, 25, 3))
    assert hourly == [D(2026, 10, 24, 23), D(2026, 10, 25, 0), D(2026, 10, 25, 1), D(2026, 10, 25, 2),
                      D(2026, 10, 25, 3)]
    nightly = slots_between("30 2 * * *", "Europe/Berlin", D(2026, 10, 24), D(2026, 10, 27))
    assert nightly == [D(2026, 10, 24, 0, 30), D(2026, 10, 25, 0, 30), D(2026, 10, 26, 1, 30)]


def test_next_fire_times_and_never_matching_cron():
    assert next_fire_times("0 9 * * 1", "America/New_York", 2, now=D(2026, 3, 1)) == [
        D(2026, 3, 2, 14, 0), D(2026, 3, 9, 13, 0)]  # EST, then EDT (US change on 8 March)
    assert next_fire_times("0 0 30 2 *", "UTC", 3, now=D(2026, 1, 1)) == []


@pytest.mark.parametrize("policy,expected", [("skip", 0), ("catch_up", 1)])
def test_misfire_policy(hub, policy, expected):
    trig = _schedule(hub, "*/10 * * * *", tz="UTC", created=D(2026, 1, 1, 0, 0), misfire=policy)
    # No scheduler ran for two hours: 00:10 … 01:50, 11 slots, were missed.
    fire_due(D(2026, 1, 1, 2, 0, 30))
    runs = list(Run.select().where(Run.trigger == trig.id))
    assert len(runs) == expected + 1  # the on-time 02:00 slot fires either way
    if policy == "catch_up":
        caught = [r for r in runs if r.trigger_data.get("missed_slots")][0]
        assert caught.trigger_data["missed_slots"] == 11
        assert caught.trigger_data["scheduled_at"] == "2026-01-01T01:50:00Z"
    # Nothing missed is fired again later, and the next slot is on time.
    fire_due(D(2026, 1, 1, 2, 0, 40))
    fire_due(D(2026, 1, 1, 2, 10, 1))
    assert Run.select().where(Run.trigger == trig.id).count() == expected + 2


def test_disabled_schedule_fires_nothing(hub):
    trig = _schedule(hub, "* * * * *", tz="UTC", created=D(2026, 1, 1))
    Trigger.update(enabled=False).where(Trigger.id == trig.id).execute()
    assert fire_due(D(2026, 1, 1, 0, 5)) == []
    assert Run.select().count() == 0


def test_schedule_api_shows_next_fire_times(client, auth):
    flow = client.post("/api/v1/flows", json=FLOW, headers=auth.headers).get_json()
    r = client.post(f"/api/v1/flows/{flow['id']}/triggers",
                    json={"type": "schedule", "cron": "0 6 * * *", "timezone": "Asia/Tokyo", "misfire": "catch_up"},
                    headers=auth.headers)
    assert r.status_code == 201, r.get_json()
    times = r.get_json()["next_fire_times"]
    assert len(times) == 5 and all(t.endswith("T21:00:00.000Z") for t in times)
    bad = client.post(f"/api/v1/flows/{flow['id']}/triggers",
                      json={"type": "schedule", "cron": "* * * * *", "misfire": "sometimes"}, headers=auth.headers)
    assert bad.status_code == 422 and "misfire" in bad.get_json()["errors"]
