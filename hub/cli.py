"""The ``hookhub`` command (SPEC §1)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from hub.config import ConfigError, Settings, load_settings

log = logging.getLogger("hookhub")


def _setup_logging(level: str) -> None:
    from hub.logs import configure  # observability (issue #8): HOOKHUB_LOG_FORMAT=json|text

    try:
        configure(level, os.environ.get("HOOKHUB_LOG_FORMAT") or "text")
    except ValueError as exc:
        _fail(str(exc))
    logging.getLogger("huey").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(logging.WARNING)


def _fail(message: str) -> None:
    click.echo(f"hookhub: {message}", err=True)
    sys.exit(2)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _boot(migrate: bool = False):
    """Settings, database (checked), migrations if asked, connectors: the start every command shares."""
    from hub.core import Hub
    from hub.db import check_database, open_database
    from hub.migrate import migrate as run_migrations
    from hub.migrate import pending
    from hub.plugins import StartupError

    settings = _settings()
    try:
        open_database(settings)
        check_database()
        if migrate:
            for name in run_migrations(settings.data_dir / "migrate.lock"):
                log.info("applied migration %s", name)
        elif pending():
            _fail("the database schema is not up to date: run `hookhub migrate` (HOOKHUB_DATABASE_URL)")
        hub = Hub(settings)
    except (ConfigError, StartupError) as exc:
        _fail(str(exc))
    if settings.redis_url:
        try:
            hub.huey.storage.conn.ping()
        except Exception as exc:
            _fail(f"HOOKHUB_REDIS_URL: cannot connect: {exc}")
    return hub


@click.group()
@click.option("--log-level", default=lambda: os.environ.get("HOOKHUB_LOG_LEVEL", "info"), show_default="info")
def main(log_level: str) -> None:
    """Hookhub: webhook automation hub with a sandboxed runtime."""
    _setup_logging(log_level)


# --- processes -------------------------------------------------------------------------------------


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from hub.db import check_database, open_database
    from hub.migrate import migrate as run_migrations

    settings = _settings()
    try:
        open_database(settings)
        check_database()
    except ConfigError as exc:
        _fail(str(exc))
    applied = run_migrations(settings.data_dir / "migrate.lock")
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=lambda: int(os.environ.get("HOOKHUB_API_WORKERS", "2")), type=int,
              show_default="2", help="API server processes")
@click.option("--threads", default=16, show_default=True, type=int, help="threads per API process (gthread)")
@click.option("--server", type=click.Choice(["gevent", "gthread"]), show_default="gevent",
              default=lambda: os.environ.get("HOOKHUB_API_SERVER", "gevent"),
              help="gunicorn worker model; gevent holds thousands of live event streams per process")
def api(host: str, port: int, workers: int, threads: int, server: str) -> None:
    """Serve the REST API and inbound webhooks (gunicorn)."""
    # observability (issue #8): an open SSE stream holds its handler for as long as it is open; with
    # gthread each holds a thread (16 streams starve the process), with gevent a greenlet. Patch before
    # peewee, psycopg2 or redis are imported so their connection state is per greenlet, and make
    # psycopg2 wait cooperatively (psycogreen). SQLite calls stay blocking but short.
    if server == "gevent":
        from gevent import monkey

        monkey.patch_all()
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    from gunicorn.app.base import BaseApplication

    hub = _boot(migrate=load_settings().is_sqlite)
    hub.close()

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", server)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_connections", 2000)
            self.cfg.set("timeout", 120)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)
            self.cfg.set("errorlog", "-")
            self.cfg.set("loglevel", "warning")

        def load(self):
            from hub.app import create_app

            return create_app()

    click.echo(f"hookhub api listening on http://{host}:{port}", err=True)
    Server().run()


def _reaper_loop(hub, stop: threading.Event) -> None:
    while not stop.wait(hub.settings.reaper_interval_seconds):
        try:
            hub.reap_once()
        except Exception:
            log.exception("reaper pass failed; trying again")


def _lower_priority(nice: int) -> None:
    """Run below the API on a shared machine: a sender waits on the API's answer (and retries or gives
    up when it is slow) while executions wait in the durable queue. Sandboxed attempts inherit it."""
    if nice <= 0:
        return
    os.nice(nice)
    # With autogroup scheduling (kernel.sched_autogroup_enabled) nice only ranks the processes of one
    # session against each other; a worker leading its own session (a service, a container) lowers
    # its session's group instead. Measured: without it a niced worker still took half the CPU.
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as fh:
                fh.write(str(nice))
        except OSError:
            pass


@main.command()
@click.option("--concurrency", "-c", default=4, show_default=True, type=int, help="node attempts at once")
def worker(concurrency: int) -> None:
    """Run node attempts from the queue (and a reaper)."""
    from huey.consumer import WORKER_THREAD

    hub = _boot(migrate=load_settings().is_sqlite)
    hub.sandbox_slots = concurrency
    _lower_priority(hub.settings.worker_nice)
    stop = threading.Event()
    threading.Thread(target=_reaper_loop, args=(hub, stop), name="reaper", daemon=True).start()
    consumer = hub.huey.create_consumer(
        workers=concurrency, worker_type=WORKER_THREAD, periodic=False, scheduler_interval=1,
        initial_delay=0.005, backoff=1.5, max_delay=0.2, check_worker_health=True,
    )
    click.echo(f"hookhub worker started ({concurrency} slots)", err=True)
    try:
        consumer.run()
    finally:
        stop.set()
        hub.close()


@main.command()
def scheduler() -> None:
    """Fire schedule triggers and run the reaper."""
    from hub.db import connection
    from hub.scheduler import fire_due

    hub = _boot(migrate=load_settings().is_sqlite)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo("hookhub scheduler started", err=True)
    _start_retention(stop)  # observability (issue #8): prune old runs every few minutes
    # Schedule slots are checked every second (cron is minute-granular; a slot fires within ~1 s of its
    # time); the reaper runs at its own interval. Any number of schedulers may run: slot claims are unique.
    next_reap = time.monotonic()
    try:
        while not stop.wait(min(1.0, hub.settings.reaper_interval_seconds)):
            try:
                with connection():
                    bells = fire_due()
                hub.ring(bells)
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + hub.settings.reaper_interval_seconds
                    hub.reap_once()
            except Exception:
                log.exception("scheduler pass failed; trying again")
    except KeyboardInterrupt:
        pass
    finally:
        hub.close()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--concurrency", default=4, show_default=True, type=int)
def serve(host: str, port: int, concurrency: int) -> None:
    """API + webhooks + scheduler + a worker, all in one process tree."""
    hub = _boot(migrate=True)  # the embedded default migrates itself
    hub.close()
    exe = [sys.executable, "-m", "hub.cli"]
    specs = {
        "api": exe + ["api", "--host", host, "--port", str(port), "--workers", "1"],
        "worker": exe + ["worker", "--concurrency", str(concurrency)],
        "scheduler": exe + ["scheduler"],
    }
    children: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def stop(*_):
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for name, cmd in specs.items():
        children[name] = subprocess.Popen(cmd)
    click.echo(f"hookhub serving on http://{host}:{port} (data in {hub.settings.data_dir})", err=True)
    restarts: dict[str, list[float]] = {name: [] for name in specs}
    try:
        while not stopping.wait(0.5):
            for name, proc in list(children.items()):
                if proc.poll() is None:
                    continue
                recent = [t for t in restarts[name] if t > time.monotonic() - 60]
                if len(recent) >= 5:
                    log.error("%s keeps exiting (code %s); stopping", name, proc.returncode)
                    stopping.set()
                    break
                log.warning("%s exited with code %s; restarting it", name, proc.returncode)
                restarts[name] = recent + [time.monotonic()]
                children[name] = subprocess.Popen(specs[name])
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # graceful for huey and gunicorn alike
        deadline = time.monotonic() + 15
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- flows and runs from the shell -----------------------------------------------------------------


def _workspace_id(workspace: int | None) -> int:
    from hub.models import Workspace

    if workspace is not None:
        if Workspace.get_or_none(Workspace.id == workspace) is None:
            _fail(f"no workspace with id {workspace}")
        return workspace
    first = Workspace.select().order_by(Workspace.id).first()
    return first.id if first else Workspace.create(name="default").id


@main.group()
def flows() -> None:
    """Manage flows."""


@flows.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workspace", type=int, default=None, help="workspace id (default: the first)")
def flows_apply(file: Path, workspace: int | None) -> None:
    """Create the flow in FILE, or add a new version if a flow of that name exists."""
    from hub.api.errors import ApiError
    from hub.db import connection
    from hub.models import Flow
    from hub.services import flows as flow_service

    hub = _boot()
    with connection():
        ws = _workspace_id(workspace)
        try:
            doc = flow_service.decode_document(file.read_bytes(), "application/yaml")
            name = doc.get("name") if isinstance(doc, dict) else None
            existing = Flow.get_or_none((Flow.workspace == ws) & (Flow.name == name)) if name else None
            if existing:
                flow = flow_service.update_flow(existing, doc, hub.registry)
            else:
                flow = flow_service.create_flow(ws, doc, hub.registry)
        except ApiError as exc:
            click.echo(f"hookhub: {exc.message}", err=True)
            for problem in exc.errors or []:
                if isinstance(problem, dict):
                    click.echo(f"  {problem.get('path') or '<document>'}: {problem.get('message')}", err=True)
            sys.exit(1)
    click.echo(json.dumps({"id": flow.id, "name": flow.name, "version": flow.latest_version}))


@main.command("run")
@click.argument("flow")
@click.option("--payload", default="{}", help="JSON: becomes trigger.body")
@click.option("--wait", is_flag=True, help="follow the run until it finishes")
@click.option("--workspace", type=int, default=None)
def run_flow(flow: str, payload: str, wait: bool, workspace: int | None) -> None:
    """Start a run of FLOW (an id or a name)."""
    from hub.db import connection
    from hub.models import Flow
    from hub.services.runs import start_manual_run

    try:
        body = json.loads(payload)
    except ValueError as exc:
        _fail(f"--payload is not valid JSON: {exc}")
    hub = _boot()
    with connection():
        ws = _workspace_id(workspace)
        where = (Flow.id == int(flow)) if flow.isdigit() else (Flow.name == flow)
        target = Flow.get_or_none(where & (Flow.workspace == ws))
        if target is None:
            _fail(f"no flow {flow!r}")
        run, bells = start_manual_run(target, body)
    hub.ring(bells)
    click.echo(json.dumps({"id": run.id, "status": run.status}))
    if wait:
        sys.exit(_watch(run.id))


@main.group()
def runs() -> None:
    """Inspect runs."""


@runs.command("watch")
@click.argument("run_id", type=int)
def runs_watch(run_id: int) -> None:
    """Follow a run's nodes live until it finishes."""
    _boot()
    sys.exit(_watch(run_id))


def _watch(run_id: int, tty: bool | None = None) -> int:
    """Follow a run until it finishes. On a terminal: a table of its nodes (status, attempt, duration)
    redrawn in place; otherwise one plain line per event (logs, CI). Exit code 0 when it succeeded."""
    from hub.db import connection
    from hub.models import NodeRun, Run, RunEvent

    tty = sys.stdout.isatty() if tty is None else tty
    seen, drawn, last_line = 0, 0, ""
    while True:
        with connection():
            run = Run.get_or_none(Run.id == run_id)
            if run is None:
                _fail(f"no run {run_id}")
            events = list(RunEvent.select().where((RunEvent.run == run_id) & (RunEvent.seq > seen))
                          .order_by(RunEvent.seq))
            nodes = list(NodeRun.select().where(NodeRun.run == run_id).order_by(NodeRun.id)) if tty else []
        for ev in events:
            seen = ev.seq
            last_line = _event_line(ev)
            if not tty:
                click.echo(last_line)
        if tty:
            lines = _node_table(run, nodes, _max_attempts(run)) + [click.style("  " + last_line, dim=True)]
            # move to the start of the previous frame and clear it, then draw the new one
            click.echo((f"\x1b[{drawn}F\x1b[J" if drawn else "") + "\n".join(lines))
            drawn = len(lines)
        if run.status in ("succeeded", "failed", "cancelled"):
            click.echo(f"run {run_id} {run.status}" + (f": {run.error}" if run.error else ""))
            if run.output is not None:
                click.echo(json.dumps(run.output, indent=2))
            return 0 if run.status == "succeeded" else 1
        time.sleep(0.2)


def _event_line(ev) -> str:
    detail = ""
    if ev.data.get("error"):
        err = ev.data["error"]
        detail = " — " + (err.get("message") if isinstance(err, dict) else str(err))
    if ev.type == "node.log":
        detail = f": {ev.data.get('line', '')}"
    elif ev.data.get("attempt"):
        detail = f" (attempt {ev.data['attempt']})" + detail
    who = f"{ev.node_id}: " if ev.node_id else ""
    return f"{ev.created_at.strftime('%H:%M:%S.%f')[:-3]}  {who}{ev.type}{detail}"


def _max_attempts(run) -> dict[str, int]:
    from hub.runtime import load_flow

    try:
        flow = load_flow(run.flow_id, run.flow_version)
        return {nid: node.retry.max_attempts for nid, node in flow.nodes.items()}
    except Exception:  # the table is a convenience: never fail the watch over it
        return {}


_STATUS_COLOURS = {"succeeded": "green", "failed": "red", "retrying": "yellow", "running": "cyan",
                   "ready": "blue", "cancelled": "magenta", "skipped": "white", "paused": "yellow"}


def _node_table(run, nodes, max_attempts: dict[str, int]) -> list[str]:
    from hub.models import utcnow

    now = utcnow()

    def duration(start, end) -> str:
        return f"{((end or now) - start).total_seconds():.2f}s" if start else "-"

    head = (f"run {run.id}  flow {run.flow_id} v{run.flow_version}  "
            + click.style(run.status, fg=_STATUS_COLOURS.get(run.status), bold=True)
            + f"  {duration(run.created_at, run.finished_at)}")
    width = max([len(n.node_id) for n in nodes] + [4])
    lines = [head, click.style(f"  {'NODE':<{width}}  {'STATUS':<10}  {'ATTEMPT':<7}  {'DURATION':>8}  ERROR",
                               bold=True)]
    for n in nodes:
        attempt = f"{n.attempts}/{max_attempts[n.node_id]}" if n.node_id in max_attempts else str(n.attempts)
        error = ""
        if n.error and n.status in ("failed", "retrying"):
            error = str(n.error.get("message") if isinstance(n.error, dict) else n.error).splitlines()[0][:60]
        status = click.style(f"{n.status:<10}", fg=_STATUS_COLOURS.get(n.status))
        lines.append(f"  {n.node_id:<{width}}  {status}  {attempt:<7}  "
                     f"{duration(n.started_at, n.finished_at):>8}  {error}".rstrip())
    return lines


# --- observability (issue #8): retention ---------------------------------------------------------


def _start_retention(stop: threading.Event) -> None:
    """Prune by the retention settings now and every few minutes, beside the scheduler's loop."""
    from hub.services.prune import INTERVAL_SECONDS, prune, retention_from_env

    try:
        retention = retention_from_env()
    except ConfigError as exc:
        _fail(str(exc))

    def loop() -> None:
        while True:
            try:
                prune(retention)
            except Exception:
                log.exception("retention pass failed; trying again later")
            if stop.wait(INTERVAL_SECONDS):
                return

    threading.Thread(target=loop, name="retention", daemon=True).start()


@main.command("prune")
@click.option("--days", type=float, default=None, help="override HOOKHUB_RETENTION_DAYS (0: no age limit)")
@click.option("--max-runs", type=int, default=None, help="override HOOKHUB_RETENTION_MAX_RUNS (0: no limit)")
def prune_command(days: float | None, max_runs: int | None) -> None:
    """Delete finished runs (and their events) and deliveries past the retention settings."""
    from hub.services.prune import Retention, prune, retention_from_env

    try:
        retention = retention_from_env()
    except ConfigError as exc:
        _fail(str(exc))
    if (days is not None and days < 0) or (max_runs is not None and max_runs < 0):
        _fail("--days and --max-runs must be at least 0")
    retention = Retention(days=retention.days if days is None else days,
                          max_runs=retention.max_runs if max_runs is None else max_runs)
    _boot()
    report = prune(retention)
    click.echo(json.dumps({"runs": report.runs, "events": report.events, "deliveries": report.deliveries}))


# --- connectors ------------------------------------------------------------------------------------


@main.group()
def connectors() -> None:
    """Installed connectors."""


@connectors.command("list")
@click.option("--json", "as_json", is_flag=True)
def connectors_list(as_json: bool) -> None:
    """List installed connectors and plugins that failed to load."""
    from hub.plugins import StartupError, get_registry

    try:
        registry = get_registry()
    except StartupError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"items": [i.to_dict() for i in registry.list()],
                               "problems": [p.__dict__ for p in registry.problems]}, indent=2))
        return
    for info in registry.list():
        net = "network" if info.permissions.get("network") else "no network"
        click.echo(f"{info.name:<20} {info.version:<10} {info.sandbox:<11} {net:<11} {info.description}")
    for problem in registry.problems:
        click.echo(f"error: {problem.plugin}: {problem.message}", err=True)


# --- connectors: scaffold and warm-up (connector platform, issue #5) ------------------------------


@connectors.command("new")
@click.argument("name")
@click.option("--dir", "dest", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="where to create the package directory")
@click.option("--description", default=None, help="one line saying what the connector does")
def connectors_new(name: str, dest: Path, description: str | None) -> None:
    """Scaffold a ready-to-publish connector package (setup.cfg entry point, connector, README, tests)."""
    from hub.scaffold import ScaffoldError, render_package

    try:
        root, written = render_package(name, dest, description)
    except ScaffoldError as exc:
        _fail(str(exc))
    for path in written:
        click.echo(f"created {path}")
    click.echo(f"\nnext: cd {root} && pip install -e '.[test]' && pytest")


@connectors.command("warm")
def connectors_warm() -> None:
    """Compile CPython for WebAssembly (the code connector) into the data dir's cache, once.

    Run it at deploy time (or in an image build) so no worker compiles it during a run.
    """
    from connectors._code_runtime import HubWasmSandbox
    from sandbox.wasm_python import PythonRuntimeMissing

    settings = _settings()
    box = HubWasmSandbox(settings.data_dir / "wasm-cache")
    try:
        box.prepare_python(progress=lambda message: click.echo(message, err=True))
    except PythonRuntimeMissing as exc:
        _fail(str(exc))
    finally:
        box.close()
    click.echo("code connector ready")


if __name__ == "__main__":
    main()
