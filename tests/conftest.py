"""Shared fixtures: real SQLite, PostgreSQL and Redis; real HTTP servers; real hub processes.

PostgreSQL and Redis are required (CI starts them): when they are unreachable the tests that need
them fail, they are never skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
import requests

PG_ADMIN_URL = os.environ.get("HOOKHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("HOOKHUB_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("HOOKHUB_TEST_REDIS_DB", "11"))


# --- services --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"hookhub_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(PG_ADMIN_URL)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN_URL}: {exc}")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    try:
        redis_lib.Redis.from_url(url).ping()
    except redis_lib.RedisError as exc:
        pytest.fail(f"Redis is required at {url}: {exc}")
    return url


def _truncate_pg(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migration'")
        tables = [r[0] for r in cur.fetchall()]
        if tables:
            cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    conn.close()


@dataclass
class Backend:
    """Environment for one hub: the embedded default, or PostgreSQL + Redis."""

    name: str
    env: dict[str, str]

    @property
    def scale_out(self) -> bool:
        return self.name == "postgres"


def _base_env(data_dir: Path) -> dict[str, str]:
    return {
        "HOOKHUB_DATA_DIR": str(data_dir),
        "HOOKHUB_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "HOOKHUB_REAPER_INTERVAL_SECONDS": "0.5",
        "HOOKHUB_REQUEUE_AFTER_SECONDS": "3",
        "HOOKHUB_LEASE_GRACE_SECONDS": "2",
    }


@pytest.fixture
def sqlite_backend(tmp_path) -> Backend:
    return Backend("sqlite", _base_env(tmp_path / "data"))


@pytest.fixture
def postgres_backend(tmp_path, pg_database, redis_url) -> Backend:
    from hub.config import load_settings
    from hub.db import open_database
    from hub.migrate import migrate

    env = _base_env(tmp_path / "data") | {"HOOKHUB_DATABASE_URL": pg_database, "HOOKHUB_REDIS_URL": redis_url}
    open_database(load_settings(env, dotenv=False))
    migrate(tmp_path / "migrate.lock")
    _truncate_pg(pg_database)
    redis_lib.Redis.from_url(redis_url).flushdb()
    return Backend("postgres", env)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")


# --- in-process hub and app ------------------------------------------------------------------------


@pytest.fixture
def hub(sqlite_backend):
    yield from _make_hub(sqlite_backend)


@pytest.fixture
def any_hub(backend):
    """The same test on the embedded default and on PostgreSQL + Redis."""
    yield from _make_hub(backend)


def _make_hub(backend: Backend):
    from hub.config import load_settings
    from hub.core import Hub
    from hub.db import connection
    from hub.migrate import migrate

    settings = load_settings(dict(backend.env), dotenv=False)
    instance = Hub(settings)
    migrate(settings.data_dir / "migrate.lock")
    instance.backend = backend
    try:
        with connection():
            yield instance
    finally:
        instance.close()


@pytest.fixture
def app(hub):
    from hub.app import create_app

    return create_app(hub=hub, test_config={"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class Auth:
    client: object
    email: str = "admin@example.com"
    password: str = "correct horse battery"
    tokens: dict = field(default_factory=dict)

    def register_and_login(self) -> dict[str, str]:
        self.client.post("/api/v1/auth/register", json={"email": self.email, "password": self.password})
        r = self.client.post("/api/v1/auth/login", json={"email": self.email, "password": self.password})
        assert r.status_code == 200, r.get_json()
        self.tokens = r.get_json()
        return self.headers

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


@pytest.fixture
def auth(client) -> Auth:
    a = Auth(client)
    a.register_and_login()
    return a


# --- a real HTTP server that counts what it receives -----------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Sink:
    """An HTTP server on 127.0.0.1 recording every request; responses programmable per path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.routes: dict[str, list[tuple[int, dict, bytes, float]]] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with sink.lock:
                    sink.requests.append(Received(self.command, self.path, dict(self.headers.items()), body))
                    queue = sink.routes.get(path)
                    status, headers, payload, delay = (
                        queue.pop(0) if queue and len(queue) > 1 else queue[0] if queue
                        else (200, {"Content-Type": "application/json"}, json.dumps(
                            {"ok": True, "path": self.path}).encode(), 0.0)
                    )
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def respond(self, path: str, *responses: tuple) -> None:
        """Queue responses for a path: (status, json_body[, delay_seconds]); the last one repeats."""
        items = []
        for r in responses:
            status, body, delay = (list(r) + [0.0])[:3]
            items.append((status, {"Content-Type": "application/json"}, json.dumps(body).encode(), delay))
        self.routes[path] = items

    def hits(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


# --- real hub processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Start ``hookhub`` commands as real processes; stop every one by PID at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp_path = tmp_path

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log_path = self.tmp_path / f"{name}-{len(self.procs)}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKHUB_")} | env
        with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, "-m", "hub.cli", *args], env=full_env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log_path
        self.procs.append(proc)
        return proc

    def api(self, env: dict[str, str]) -> str:
        port = free_port()
        proc = self.start(["api", "--port", str(port), "--workers", "1"], env, "api")
        return self.wait_http(f"http://127.0.0.1:{port}", proc)

    def serve(self, env: dict[str, str]) -> str:
        port = free_port()
        proc = self.start(["serve", "--port", str(port)], env, "serve")
        return self.wait_http(f"http://127.0.0.1:{port}", proc)

    def wait_http(self, base: str, proc: subprocess.Popen, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode}: {Path(proc.log_path).read_text()}")
            try:
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    return base
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting
                pass
            time.sleep(0.1)
        raise AssertionError(f"{base} did not come up: {Path(proc.log_path).read_text()}")

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 20) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def api_login(base: str) -> dict[str, str]:
    creds = {"email": "ops@example.com", "password": "correct horse battery"}
    requests.post(base + "/api/v1/auth/register", json=creds, timeout=10)
    r = requests.post(base + "/api/v1/auth/login", json=creds, timeout=10)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def wait_run(base: str, headers: dict, run_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = requests.get(f"{base}/api/v1/runs/{run_id}", headers=headers, timeout=10).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def wait_until(what: str, check, timeout: float = 40, step: float = 0.05):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def make_flow_version(doc: dict):
    """A workspace, a flow and its version 1 holding ``doc``, straight in the database."""
    from hub.db import write_transaction
    from hub.models import Flow, FlowVersion, Workspace

    with write_transaction():
        ws = Workspace.create(name="w")
        flow = Flow.create(workspace=ws, name=doc["name"])
        return FlowVersion.create(flow=flow, version=1, document=doc)


def start_run(fv, body=None):
    """Create a run of ``fv`` the way a trigger would (its doorbells are left unrung)."""
    from hub.db import write_transaction
    from hub.runtime import create_run

    with write_transaction():
        run, _bells = create_run(fv, {"body": body or {}}, workspace_id=fv.flow.workspace_id)
    return run
