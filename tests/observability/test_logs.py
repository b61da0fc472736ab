"""Structured logs: JSON lines carrying request, run and node ids; the format setting is checked."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import requests
from huey import MemoryHuey

from hub.logs import JsonFormatter, TextFormatter, log_context
from hub.services.live import instrument


def open_text(path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("hookhub.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream, handler


def test_json_lines_carry_the_run_and_node_a_worker_task_is_executing():
    logger, stream, handler = _capture(JsonFormatter())
    huey = MemoryHuey("t", immediate=True)

    @huey.task(name="execute_node")
    def execute_node(run_id, node_id):
        logger.info("inside %s", node_id)

    instrument(huey)
    try:
        execute_node(7, "fetch")
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
    inside, after = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert inside["message"] == "inside fetch" and inside["level"] == "info"
    assert (inside["run_id"], inside["node_id"]) == (7, "fetch")
    assert "run_id" not in after and "node_id" not in after  # cleared when the task finished
    assert inside["logger"] == "hookhub.test-logs" and inside["ts"].endswith("Z")


def test_text_lines_show_context_and_exceptions_stay_in_json():
    logger, stream, handler = _capture(TextFormatter())
    try:
        with log_context(run_id=3, node_id="b"):
            logger.info("hello")
        logger.info("plain")
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert first.endswith("[run_id=3 node_id=b] hello") and second.endswith("] plain")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    try:
        raise ValueError("bad")
    except ValueError:
        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad" in doc["exc_info"]


def test_api_json_logs_carry_the_request_id(sqlite_backend, processes):
    env = sqlite_backend.env | {"HOOKHUB_LOG_FORMAT": "json"}
    base = processes.api(env)
    r = requests.get(f"{base}/api/v1/runs", headers={"X-Request-Id": "req-observability-1"}, timeout=10)
    assert r.status_code == 401
    proc = processes.procs[-1]
    processes.stop(proc)
    lines = open_text(proc.log_path).splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert docs, "no JSON log lines"
    assert any(d.get("request_id") == "req-observability-1" for d in docs), docs


def test_a_bad_log_format_fails_with_one_line(sqlite_backend):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKHUB_")} | sqlite_backend.env
    out = subprocess.run([sys.executable, "-m", "hub.cli", "connectors", "list"],
                         env=env | {"HOOKHUB_LOG_FORMAT": "xml"}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "hookhub: HOOKHUB_LOG_FORMAT: expected json or text, got 'xml'"
