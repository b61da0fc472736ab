"""Start and stop a hub for a benchmark: the embedded default, or scale-out on PostgreSQL + Redis.

Everything targets 127.0.0.1; every process is started here and stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

PG_ADMIN = os.environ.get("HOOKHUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("HOOKHUB_BENCH_REDIS", "redis://127.0.0.1:6379/13")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_peak_kib(pid: int) -> int:
    """Peak RSS (VmHWM) of a process and all its descendants, in KiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Hub:
    """A running hub: its base URL, auth headers, environment and processes."""

    mode: str  # "embedded" | "scale-out"
    workers: int = 1
    base: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, list[subprocess.Popen]] = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hookhub-bench-")))
    pg_name: str | None = None

    def start(self, *, api_workers: int = 2, concurrency: int = 4) -> Hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKHUB_")}
        env |= {
            "HOOKHUB_DATA_DIR": str(self.tmp / "data"),
            "HOOKHUB_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
            "HOOKHUB_LOG_LEVEL": "warning",
            "HOOKHUB_SECRET_KEY": "bench-" + "x" * 40,
        }
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        if self.mode == "scale-out":
            import psycopg2
            import redis

            self.pg_name = f"hookhub_bench_{uuid.uuid4().hex[:8]}"
            admin = psycopg2.connect(PG_ADMIN)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.pg_name}"')
            admin.close()
            redis.Redis.from_url(REDIS).flushdb()
            env |= {"HOOKHUB_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + "/" + self.pg_name,
                    "HOOKHUB_REDIS_URL": REDIS}
            self.env = env
            subprocess.run([sys.executable, "-m", "hub.cli", "migrate"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            self._spawn("api", ["api", "--port", str(port), "--workers", str(api_workers)])
            for _ in range(self.workers):
                self._spawn("worker", ["worker", "--concurrency", str(concurrency)])
        else:
            self.env = env
            self._spawn("serve", ["serve", "--port", str(port), "--concurrency", str(concurrency)])
        self._wait_up()
        creds = {"email": "bench@example.com", "password": "bench-password-1"}
        requests.post(self.base + "/api/v1/auth/register", json=creds, timeout=10)
        token = requests.post(self.base + "/api/v1/auth/login", json=creds, timeout=10).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}-{len(self.procs.get(name, []))}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.setdefault(name, []).append(proc)

    def _wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hub did not start; logs in {self.tmp}")

    def flow(self, doc: dict) -> int:
        r = requests.post(self.base + "/api/v1/flows", json=doc, headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()["id"]

    def webhook(self, flow_id: int, **settings) -> str:
        r = requests.post(f"{self.base}/api/v1/flows/{flow_id}/triggers", json={"type": "webhook", **settings},
                          headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()["url"]

    def run(self, flow_id: int, payload=None) -> int:
        r = requests.post(f"{self.base}/api/v1/flows/{flow_id}/runs", json={"payload": payload or {}},
                          headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()["id"]

    def wait_run(self, run_id: int, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = requests.get(f"{self.base}/api/v1/runs/{run_id}", headers=self.headers, timeout=30).json()
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(0.05)
        raise RuntimeError(f"run {run_id} did not finish")

    def count_runs(self, status: str | None = None, flow_id: int | None = None) -> int:
        url = f"{self.base}/api/v1/runs?page_size=1" + (f"&status={status}" if status else "")
        url += f"&flow_id={flow_id}" if flow_id else ""
        return requests.get(url, headers=self.headers, timeout=30).json()["total"]

    def wait_finished(self, flow_id: int, timeout: float = 300) -> None:
        """Wait until no run of the flow is running, with one light count a poll (a full run with
        all its nodes costs the API several ms to answer: polling those loaded the hub under test)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count_runs("running", flow_id) == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"runs of flow {flow_id} did not finish")

    def rss_mib(self) -> dict[str, float]:
        return {name: round(sum(rss_peak_kib(p.pid) for p in procs) / 1024, 1) for name, procs in self.procs.items()}

    def stop(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGINT)
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.pg_name:
            import psycopg2

            admin = psycopg2.connect(PG_ADMIN)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            admin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
