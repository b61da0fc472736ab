"""Schedule triggers: cron in an IANA time zone, fired once per slot however many schedulers run.

A *slot* is a UTC instant. Cron fields are read as wall-clock times in the trigger's zone:

- a wall time that does not exist (the spring-forward gap) is shifted forward by the gap's length, as
  the clock would read had it not jumped (02:30 on a 02:00→03:00 change fires at 03:30); slots that
  land on the same instant fire once (so ``*/15 * * * *`` keeps firing every 15 real minutes);
- a wall time that happens twice (the fall-back fold) fires once, at its first occurrence — unless the
  hour field is a wildcard (``*``, ``*/2``, …): then both occurrences fire, so interval-like schedules
  do not pause for an hour.

The claim is a row: UNIQUE (trigger, slot_at) in ``schedule_slot``, inserted in the same transaction as
the run. Any number of schedulers may call :func:`fire_due` at once; each slot gets exactly one run.

Misfires (slots older than ``misfire_grace_seconds`` when first seen, e.g. no scheduler was running):
``skip`` (default) fires nothing for them; ``catch_up`` fires one run for the latest of them, with
``trigger.missed_slots`` telling how many were missed.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Iterator

from croniter import croniter
from croniter.croniter import CroniterBadDateError
from peewee import JOIN, fn

from hub.db import write_transaction
from hub.models import ScheduleSlot, Trigger, utcnow
from hub.runtime import Doorbell, create_run

__all__ = ["fire_due", "slots_between", "next_fire_times", "DEFAULT_GRACE_SECONDS"]

log = logging.getLogger("hookhub.scheduler")
UTC = dt.UTC
DEFAULT_GRACE_SECONDS = 60
#: no zone moves its clock by more than this at once; bounds the look-around when mapping wall times
_MARGIN = dt.timedelta(hours=3)
_MAX_MISSED_COUNT = 10_000


def _instants(wall: dt.datetime, zone: zoneinfo.ZoneInfo, both_folds: bool) -> list[dt.datetime]:
    """Naive UTC instants of one naive wall-clock time in ``zone`` (see the module doc for DST rules)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC).replace(tzinfo=None)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(tzinfo=None)
    if first == second or first > second:
        # Unambiguous; or in a gap, where fold=0 applies the offset from before the change, i.e. the
        # wall time shifted forward by the gap.
        return [first]
    return [first, second] if both_folds else [first]


def _wall(instant: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return instant.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def slots_between(cron: str, tz: str | None, after: dt.datetime, until: dt.datetime,
                  limit: int | None = None) -> list[dt.datetime]:
    """Slots (naive UTC, ascending, distinct) in ``(after, until]``; at most ``limit`` (the earliest)."""
    zone = zoneinfo.ZoneInfo(tz or "UTC")
    both = cron.split()[1].startswith("*") if len(cron.split()) >= 2 else False
    walls = croniter(cron, _wall(after, zone) - _MARGIN)
    stop_wall = _wall(until, zone) + _MARGIN
    found: set[dt.datetime] = set()
    try:
        while True:
            wall = walls.get_next(dt.datetime)
            if wall > stop_wall:
                break
            for instant in _instants(wall, zone, both):
                if after < instant <= until:
                    found.add(instant)
            # Walls come in order and an instant is never more than _MARGIN from its wall's naive UTC
            # reading, so once enough are found and the walls have moved past them, the earliest are final.
            if limit is not None and len(found) >= limit:
                cutoff = sorted(found)[limit - 1]
                if _wall(cutoff, zone) + _MARGIN < wall:
                    break
    except CroniterBadDateError:
        pass  # a cron that never matches again (e.g. 30 February)
    ordered = sorted(found)
    return ordered[:limit] if limit is not None else ordered


def iter_slots(cron: str, tz: str | None, after: dt.datetime) -> Iterator[dt.datetime]:
    """Slots after ``after``, lazily, in widening windows."""
    window = dt.timedelta(hours=1)
    start = after
    while window < dt.timedelta(days=4 * 366 + 1):
        batch = slots_between(cron, tz, start, start + window, limit=64)
        yield from batch
        start = batch[-1] if len(batch) == 64 else start + window
        window *= 2


def next_fire_times(cron: str, tz: str | None, count: int = 5, now: dt.datetime | None = None) -> list[dt.datetime]:
    out: list[dt.datetime] = []
    for slot in iter_slots(cron, tz, now or utcnow()):
        out.append(slot)
        if len(out) >= count:
            break
    return out


def _claim_and_fire(trigger: Trigger, slot: dt.datetime, *, status: str, trigger_data: dict | None
                    ) -> list[Doorbell]:
    """Insert the (trigger, slot) claim and, if won, the run — one transaction. [] if someone else won."""
    with write_transaction():
        won = (ScheduleSlot.insert(trigger=trigger.id, slot_at=slot, status=status, created_at=utcnow())
               .on_conflict(conflict_target=[ScheduleSlot.trigger, ScheduleSlot.slot_at], action="NOTHING")
               .as_rowcount().execute())
        if not won or trigger_data is None:
            return []
        run, bells = create_run(trigger.run_version(), trigger_data, workspace_id=trigger.workspace_id,
                                trigger_id=trigger.id, source="schedule")
        ScheduleSlot.update(run=run.id).where((ScheduleSlot.trigger == trigger.id) & (ScheduleSlot.slot_at == slot)
                                              ).execute()
    return bells


def _trigger_data(trigger: Trigger, slot: dt.datetime, missed: int = 0) -> dict:
    config = trigger.config or {}
    data = {"body": config.get("payload"), "payload": config.get("payload"), "headers": {}, "query": {},
            "method": "SCHEDULE", "scheduled_at": slot.isoformat() + "Z",
            "timezone": config.get("timezone") or "UTC"}
    if missed:
        data["missed_slots"] = missed
    return data


def fire_due(now: dt.datetime | None = None) -> list[Doorbell]:
    """Fire every due slot of every enabled schedule trigger, once. Time is injected (naive UTC) so tests
    can drive a simulated day; ring the returned bells after this returns (everything is committed)."""
    now = now or utcnow()
    last_slot = fn.MAX(ScheduleSlot.slot_at)
    # Read all first: an open cursor would hold SQLite's read lock into the write transactions below.
    rows = list(Trigger.select(Trigger, last_slot.alias("last_slot"))
                .join(ScheduleSlot, JOIN.LEFT_OUTER, on=(ScheduleSlot.trigger == Trigger.id))
                .where((Trigger.type == "schedule") & (Trigger.enabled == True))  # noqa: E712
                .group_by(Trigger.id))
    bells: list[Doorbell] = []
    for trigger in rows:
        try:
            bells.extend(_fire_trigger(trigger, now))
        except Exception:
            log.exception("schedule trigger %s: firing failed; trying again next pass", trigger.id)
    return bells


def _fire_trigger(trigger: Trigger, now: dt.datetime) -> list[Doorbell]:
    config = trigger.config or {}
    cron = config.get("cron")
    if not cron:
        return []
    last = trigger.last_slot
    if isinstance(last, str):  # SQLite hands aggregates back as text
        last = dt.datetime.fromisoformat(last)
    # The cursor: the last claimed slot, else when the trigger was created.
    after = last or trigger.created_at
    grace = dt.timedelta(seconds=int(config.get("misfire_grace_seconds") or DEFAULT_GRACE_SECONDS))
    on_time_from = max(after, now - grace)
    bells: list[Doorbell] = []
    if on_time_from > after:
        missed = slots_between(cron, config.get("timezone"), after, on_time_from, limit=_MAX_MISSED_COUNT)
        if missed:
            latest = missed[-1]
            if config.get("misfire") == "catch_up":
                bells += _claim_and_fire(trigger, latest, status="fired",
                                         trigger_data=_trigger_data(trigger, latest, missed=len(missed)))
            else:
                _claim_and_fire(trigger, latest, status="skipped", trigger_data=None)  # moves the cursor
                log.info("schedule trigger %s: skipped %d missed slot(s) up to %sZ", trigger.id, len(missed),
                         latest.isoformat())
    for slot in slots_between(cron, config.get("timezone"), on_time_from, now, limit=1000):
        bells += _claim_and_fire(trigger, slot, status="fired", trigger_data=_trigger_data(trigger, slot))
    return bells
