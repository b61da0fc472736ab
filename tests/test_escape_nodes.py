"""The escape suite at the level users see: hostile connectors as nodes of one run, executed by the
hub's runtime with its real subprocess sandbox. Each fails its node with a clear error (or is
contained), the hub keeps working, and nothing is left running afterwards."""

from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hub.config import load_settings
from hub.core import Hub
from hub.db import connection, write_transaction
from hub.migrate import migrate
from hub.models import Flow, FlowVersion, NodeRun, Run, Workspace
from hub.plugins import load_registry
from hub.runtime import create_run, execute_node
from tests.plugins import hostile_nodes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop and namespaces need root (CI runs as root)")


def _processes_of(uids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as fh:
                    uid_line = next(line for line in fh if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(uid_line.split()[1]) in uids:
                found.append(int(entry))
    return found


@pytest.fixture
def hostile_hub(sqlite_backend):
    settings = load_settings(dict(sqlite_backend.env), dotenv=False)
    registry = load_registry(extra_plugins=[hostile_nodes])
    hub = Hub(settings, registry=registry)
    migrate(settings.data_dir / "migrate.lock")
    try:
        with connection():
            yield hub
    finally:
        hub.close()


def _drive(hub: Hub, run_id: int, bells) -> None:
    """Run every doorbell like a worker with 4 threads would, until nothing is left to do."""
    lock = threading.Lock()
    pending = list(bells)

    def one(bell):
        with connection():
            more = execute_node(bell.run_id, bell.node_id, hub.runtime)
        with lock:
            pending.extend(more)

    with ThreadPoolExecutor(4) as pool:
        while pending:
            with lock:
                batch, pending[:] = list(pending), []
            list(pool.map(one, batch))


def test_hostile_nodes_fail_clearly_and_the_hub_keeps_going(hostile_hub):
    hub = hostile_hub
    data = hub.settings.data_dir
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    once = {"retry": {"max_attempts": 1}}
    doc = {"name": "hostile", "nodes": [
        {"id": "spin", "connector": "hostile-spin", "timeout_seconds": 1, **once},
        {"id": "sleep", "connector": "hostile-sleep", "timeout_seconds": 1, **once},
        {"id": "hog", "connector": "hostile-hog", "memory_mb": 200, **once},
        {"id": "forkbomb", "connector": "hostile-forkbomb", "timeout_seconds": 20, **once},
        {"id": "snoop", "connector": "hostile-snoop", **once, "config": {"paths": [
            str(data / "hookhub.db"), str(data / "secret.key"), f"/proc/{os.getpid()}/environ"]}},
        {"id": "connect", "connector": "hostile-connect", **once,
         "config": {"port": listener.getsockname()[1]}},
        {"id": "bigfile", "connector": "hostile-bigfile", **once},
        {"id": "shout", "connector": "hostile-shout", "timeout_seconds": 30, **once},
        {"id": "huge", "connector": "hostile-huge", **once},
        {"id": "segfault", "connector": "hostile-segfault", **once},
        {"id": "fine", "connector": "transform", "config": {"value": "still here"}},
    ]}
    with write_transaction():
        ws = Workspace.create(name="w")
        flow = Flow.create(workspace=ws, name="hostile")
        fv = FlowVersion.create(flow=flow, version=1, document=doc)
        run, bells = create_run(fv, {"body": {}}, workspace_id=ws.id)
    _drive(hub, run.id, bells)
    listener.close()

    nodes = {n.node_id: n for n in NodeRun.select().where(NodeRun.run == run.id)}
    status = {k: n.status for k, n in nodes.items()}
    errors = {k: (n.error or {}) for k, n in nodes.items()}
    assert status["fine"] == "succeeded" and nodes["fine"].output == "still here"
    for node_id in ("spin", "sleep"):
        assert status[node_id] == "failed"
        assert errors[node_id]["kind"] == "timeout" and "timed out after 1 s" in errors[node_id]["message"]
    assert errors["hog"]["kind"] == "memory" and "exceeded memory limit 200 MiB" in errors["hog"]["message"]
    assert errors["huge"]["kind"] == "output_too_large" and "output larger than 1 MiB" in errors["huge"]["message"]
    assert status["connect"] == "failed" and "unreachable" in errors["connect"]["message"].lower()
    assert status["bigfile"] == "failed" and "File too large" in errors["bigfile"]["message"]
    assert errors["segfault"]["kind"] == "crashed"
    # contained rather than failed: the bomb hits its process limit, the flood never reaches us
    assert status["forkbomb"] == "succeeded"
    assert status["shout"] == "succeeded" and nodes["shout"].output == {"shouted": True}
    # the hub's database and secret key are not even there (the data dir is covered), and the
    # worker's environment is another user's
    seen = nodes["snoop"].output
    assert seen[str(data / "hookhub.db")].startswith("denied") and seen[str(data / "secret.key")].startswith("denied")
    assert seen[f"/proc/{os.getpid()}/environ"] == "denied: PermissionError", seen
    assert Run.get_by_id(run.id).status == "failed"

    # nothing an attempt started is still running under a sandbox uid
    sandbox = hub.sandbox_for("python")
    assert _processes_of(set(sandbox.uids.values())) == []

    # and the same hub runs the next flow
    with write_transaction():
        nice = Flow.create(workspace=ws, name="nice")
        nfv = FlowVersion.create(flow=nice, version=1, document={"name": "nice", "nodes": [
            {"id": "t", "connector": "transform", "config": {"value": 42}}]})
        run2, bells2 = create_run(nfv, {"body": {}}, workspace_id=ws.id)
    _drive(hub, run2.id, bells2)
    assert Run.get_by_id(run2.id).status == "succeeded"
