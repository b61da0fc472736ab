"""hub.tasks: the queue's storages on both backends (no revoke flags, a real message end to end)."""

from __future__ import annotations

import pytest

from hub.db import connection
from hub.models import NodeRun
from tests.conftest import make_flow_version, start_run


def test_a_message_runs_its_node_without_revoke_flags(any_hub) -> None:
    fv = make_flow_version({"name": "one", "nodes": [{"id": "t", "connector": "transform", "config": {"value": 7}}]})
    run = start_run(fv)
    huey = any_hub.huey
    huey.storage.flush_queue()
    any_hub.tasks["execute_node"](run.id, "t")
    task = huey.dequeue()
    assert task is not None and task.args == (run.id, "t")
    assert huey.is_revoked(task) is False  # answered without a queue round trip
    with connection():
        huey.execute(task)
    assert NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == "t")).output == 7
    with pytest.raises(NotImplementedError, match="cancel the run"):
        huey.revoke(task)
    assert huey.is_revoked(task) is False
