"""`hookhub run --wait` and `hookhub runs watch` against a real hub: plain lines, or a live table on a TTY."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import requests

from tests.conftest import api_login
from tests.observability.test_events import slow_flow

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _env(backend) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOOKHUB_")} | backend.env


def _flow(base: str, headers: dict, sink) -> int:
    sink.respond("/one", (200, {"one": True}, 1.0))
    sink.respond("/flaky", (503, {"error": "busy"}), (200, {"flaky": "ok"}, 0.3))
    sink.respond("/two", (200, {"two": True}, 0.3))
    flow = requests.post(f"{base}/api/v1/flows", json=slow_flow(sink.url), headers=headers, timeout=10)
    assert flow.status_code == 201, flow.text
    return flow.json()["id"]


def test_run_wait_prints_plain_lines_when_not_a_terminal(sqlite_backend, processes, sink):
    base = processes.serve(sqlite_backend.env)
    headers = api_login(base)
    flow_id = _flow(base, headers, sink)
    out = subprocess.run([sys.executable, "-m", "hub.cli", "run", str(flow_id), "--wait"], env=_env(sqlite_backend),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\x1b[" not in out.stdout  # no cursor movement or colour into a pipe
    lines = out.stdout.splitlines()
    assert '"status": "running"' in lines[0]
    assert any("flaky: node.retrying (attempt 1)" in line and "503" in line for line in lines), out.stdout
    assert any("two: node.succeeded" in line for line in lines)
    assert re.match(r"run \d+ succeeded", lines[-1])


def test_runs_watch_draws_a_live_table_on_a_terminal(sqlite_backend, processes, sink):
    base = processes.serve(sqlite_backend.env)
    headers = api_login(base)
    flow_id = _flow(base, headers, sink)
    run_id = requests.post(f"{base}/api/v1/flows/{flow_id}/runs", json={"payload": {}}, headers=headers,
                           timeout=10).json()["id"]

    pid, fd = pty.fork()
    if pid == 0:  # the child: hookhub on a terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "hub.cli", "runs", "watch", str(run_id)],
                   _env(sqlite_backend) | {"TERM": "xterm"})
    output = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert re.search(r"\x1b\[\d+F\x1b\[J", text), "the table is redrawn in place"
    frames = ANSI.sub("", text)
    assert re.search(r"one\s+running\s+1/\d", frames), frames  # a frame drawn while a node ran
    final = frames[frames.rindex(f"run {run_id}  flow"):]
    for node, attempt in (("one", r"1/\d"), ("flaky", "2/3"), ("two", r"1/\d")):
        assert re.search(rf"{node}\s+succeeded\s+{attempt}\s+\d+\.\d\ds", final), final
    assert f"run {run_id} succeeded" in final
