"""Workers yield the CPU to the API (HOOKHUB_WORKER_NICE): accepting webhooks comes first under overload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import wait_until


def _nice(pid: int) -> int:
    # /proc/<pid>/stat: the command may hold spaces; fields after ")" are fixed, nice is the 19th overall
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def _autogroup_nice(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None  # a kernel without autogroup scheduling


@pytest.mark.parametrize(("setting", "expected"), [(None, 10), ("3", 3), ("0", 0)])
def test_worker_runs_below_the_api(sqlite_backend, processes, setting, expected) -> None:
    env = sqlite_backend.env | ({"HOOKHUB_WORKER_NICE": setting} if setting is not None else {})
    base = processes.api(env)  # noqa: F841 - the API stays at the priority it was started with
    api = processes.procs[-1]
    worker = processes.start(["worker", "--concurrency", "1"], env, "worker")
    base_nice = os.nice(0)  # the test run's own niceness, which both processes start from
    want = min(19, base_nice + expected)
    wait_until("the worker to lower its priority", lambda: _nice(worker.pid) == want, timeout=30)
    assert _nice(api.pid) == base_nice
    # started in its own session (as a service would be): its scheduling group is lowered too
    if _autogroup_nice(worker.pid) is not None:
        assert _autogroup_nice(worker.pid) == expected
        assert _autogroup_nice(api.pid) == 0


def test_a_bad_worker_nice_stops_start_up(tmp_path) -> None:
    from hub.config import ConfigError, load_settings

    for bad in ("20", "-1", "low"):
        with pytest.raises(ConfigError, match="HOOKHUB_WORKER_NICE"):
            load_settings({"HOOKHUB_DATA_DIR": str(tmp_path), "HOOKHUB_WORKER_NICE": bad}, dotenv=False)
