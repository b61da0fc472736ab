"""ProcessSandbox against real processes: every hostile behaviour is a connector in hostile.py."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sandbox import ConnectorSpec, Limits, Result
from sandbox.process import ProcessSandbox

ROOT = os.geteuid() == 0
UID_BASE = 61000
SLOTS = 4
root_only = pytest.mark.skipif(not ROOT, reason="uid drop needs root")


def spec(name: str) -> ConnectorSpec:
    return ConnectorSpec("python", f"tests.sandbox.hostile:{name}")


def payload(config: dict[str, Any] | None = None, input: Any = None, **context: Any) -> dict[str, Any]:
    return {"config": config or {}, "input": input, "context": context}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _slot_uid_processes(uids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if uid in uids:
            found.append(int(entry))
    return found


def _eventually(check, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "still not true after the attempt"
        time.sleep(0.01)


def assert_nothing_left(sb: ProcessSandbox) -> None:
    """No attempt process, orphan or temp dir survives an attempt."""
    deadline = time.monotonic() + 2
    while True:
        pid = sb.zygote_pid
        left = (_children(pid) if pid else []) + (_slot_uid_processes(set(sb.uids.values())) if ROOT else [])
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert left == []
    _eventually(lambda: os.listdir(sb._base) == [])


#: Visible to attempts unless hidden (a data dir outside /tmp, a key file), hidden by the fixture.
HIDDEN_DIR, HIDDEN_FILE = "/usr/share/doc", "/etc/hostname"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ProcessSandbox]:
    sb = ProcessSandbox(preload=["tests.sandbox.hostile"], slots=SLOTS, hide=[HIDDEN_DIR, HIDDEN_FILE])
    yield sb
    sb.close()


@pytest.fixture
def sb(sandbox: ProcessSandbox) -> Iterator[ProcessSandbox]:
    yield sandbox
    assert_nothing_left(sandbox)


def test_round_trip(sb: ProcessSandbox) -> None:
    r = sb.run(
        spec("Echo"),
        payload(
            {"greeting": "hi"},
            {"a": [1, 2]},
            run_id=7,
            node_id="n1",
            attempt=2,
            idempotency_key="k",
            allowed_private_networks=["127.0.0.0/8"],
        ),
        Limits(),
    )
    assert r.ok, r
    out = r.output
    assert out["greeting"] == "hi"
    assert out["input"] == {"a": [1, 2]}
    assert (out["run_id"], out["node_id"], out["attempt"], out["key"]) == (7, "n1", 2, "k")
    assert out["allowed"] == ["127.0.0.0/8"]
    # Empty environment but for the private temp dir, which is also the cwd.
    assert out["env"] == {"TMPDIR": out["cwd"]}
    assert out["cwd"].startswith(sb._base)
    # removed right after the attempt, while the caller goes on (run() answers at the result)
    _eventually(lambda: not os.path.exists(out["cwd"]))
    if ROOT:
        assert out["uid"] in sb.uids.values() and out["uid"] >= UID_BASE
    assert "INFO hookhub.connector: echoing n1" in r.logs
    assert r.duration_ms > 0


def test_default_idempotency_key(sb: ProcessSandbox) -> None:
    import hashlib

    r = sb.run(spec("Echo"), payload(run_id=1, node_id="a", attempt=3), Limits())
    assert r.output["key"] == hashlib.sha256(b"1:a:3").hexdigest()


def test_connector_errors(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Fail"), payload(), Limits())
    assert (r.ok, r.error_kind, r.error, r.retryable, r.retry_after) == (False, "connector", "bad request", False, None)
    r = sb.run(spec("Fail"), payload({"retry": True}), Limits())
    assert (r.error_kind, r.error, r.retryable, r.retry_after) == ("connector", "rate limited", True, 7.5)


def test_invalid_config_is_fatal(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Fail"), payload({"retry": "maybe", "extra": 1}), Limits())
    assert r.error_kind == "connector" and not r.retryable
    assert r.error.startswith("invalid config: ") and "extra" in r.error and "retry" in r.error


def test_unexpected_exception_is_retryable_with_traceback(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Boom"), payload(), Limits())
    assert (r.error_kind, r.error, r.retryable) == ("connector", "KeyError: 'missing'", True)
    assert "Traceback" in r.logs[-1]


def test_unknown_target(sb: ProcessSandbox) -> None:
    r = sb.run(ConnectorSpec("python", "tests.sandbox.nope:X"), payload(), Limits())
    assert r.error_kind == "connector" and "cannot load connector" in r.error
    r = sb.run(ConnectorSpec("python", "os:getcwd"), payload(), Limits())
    assert "not a hub.sdk.Connector" in r.error


@pytest.mark.parametrize("name", ["Spin", "Sleep"])
def test_timeout_kills(sb: ProcessSandbox, name: str) -> None:
    start = time.monotonic()
    r = sb.run(spec(name), payload(), Limits(timeout_seconds=1))
    assert time.monotonic() - start < 2
    assert (r.ok, r.error_kind, r.error, r.retryable) == (False, "timeout", "timed out after 1 s", True)
    if name == "Spin":
        assert r.logs == ["INFO hookhub.connector: spinning"]  # logs survive the kill


def test_memory_limit(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Hog"), payload(), Limits(memory_mb=128))
    assert (r.error_kind, r.error, r.retryable) == ("memory", "exceeded memory limit 128 MiB", False)


@root_only
def test_fork_bomb_is_contained(sb: ProcessSandbox) -> None:
    r = sb.run(spec("ForkBomb"), payload(), Limits(max_processes=16))
    assert r.ok, r
    assert 0 < r.output["forks"] < 16
    # assert_nothing_left: the children that setsid() away are killed too


@root_only
def test_cannot_read_secrets(sb: ProcessSandbox) -> None:
    # A root-only file where the attempt can see it (the sandbox's own work dir): the uid drop,
    # not the mount namespace, is what keeps it out.
    secret = os.path.join(sb._base, "secret.key")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"hunter2")
    os.close(fd)
    try:
        paths = [f"/proc/{sb.zygote_pid}/environ", f"/proc/{os.getpid()}/environ", secret]
        r = sb.run(spec("Snoop"), payload({"paths": paths}), Limits())
    finally:
        os.unlink(secret)
    assert r.ok, r
    assert r.output == {p: "denied: PermissionError" for p in paths}


@root_only
def test_hidden_paths_and_private_python(sb: ProcessSandbox) -> None:
    if not (os.path.isfile(HIDDEN_FILE) and os.path.isdir(HIDDEN_DIR) and os.listdir(HIDDEN_DIR)):
        pytest.skip(f"needs {HIDDEN_FILE} and a non-empty {HIDDEN_DIR}")
    doc = os.path.join(HIDDEN_DIR, sorted(os.listdir(HIDDEN_DIR))[0])
    r = sb.run(spec("Snoop"), payload({"paths": [HIDDEN_FILE, doc, "/etc/os-release", os.__file__]}), Limits())
    assert r.ok, r
    assert r.output[HIDDEN_FILE] == ""  # /dev/null
    assert r.output[doc].startswith("denied")
    # A module never imported before the fork still loads although this Python may live under a
    # 0700 directory (pyenv under /root): the test connector's open() of os.py, and the import
    # machinery in test_network_off_unless_asked (encodings.idna).
    assert not r.output["/etc/os-release"].startswith("denied")
    assert not r.output[os.__file__].startswith("denied")


@root_only
def test_writes_only_to_its_own_dir(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Litter"), payload(), Limits())
    assert r.ok, r
    own = [d for d, v in r.output.items() if d.startswith(sb._base)]
    assert len(own) == 1 and r.output[own[0]] == "written"
    assert all(v.startswith("denied") for d, v in r.output.items() if d not in own), r.output


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hi")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    srv.close()


def test_network_off_unless_asked(sb: ProcessSandbox, listener: int) -> None:
    if any("network" in n for n in sb.not_enforced):
        pytest.skip("no network namespaces here")
    r = sb.run(spec("Connect"), payload({"port": listener}), Limits())
    assert r.error_kind == "connector" and "unreachable" in r.error, r
    r = sb.run(spec("Connect"), payload({"port": listener}), Limits(network=True))
    assert r.ok and r.output == {"got": "hi"}, r


def test_file_size_limit(sb: ProcessSandbox) -> None:
    r = sb.run(spec("BigFile"), payload(), Limits(max_file_bytes=1 << 20))
    assert r.error_kind == "connector" and "File too large" in r.error, r


def test_stdout_flood_does_not_corrupt(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Shout"), payload(), Limits())
    assert r.ok and r.output == {"shouted": True}, r


def test_output_too_large(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Huge"), payload(), Limits())
    assert (r.error_kind, r.error, r.retryable) == ("output_too_large", "output larger than 1 MiB", False)


def test_raw_flood_on_result_socket_is_killed(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Flood"), payload(), Limits(timeout_seconds=10))
    assert (r.error_kind, r.error) == ("output_too_large", "output larger than 1 MiB")
    assert r.duration_ms < 5000


def test_nothing_runs_on_after_the_result(sb: ProcessSandbox) -> None:
    # run() answers at the result frame (its own output, forged or not) and has the rest killed,
    # although the connector and its child meant to go on for a minute
    r = sb.run(spec("ForgeThenLinger"), payload(), Limits(timeout_seconds=30))
    assert r.ok and r.output == "forged", r
    assert r.duration_ms < 5000
    assert_nothing_left(sb)
    assert sb.run(spec("Echo"), payload(), Limits()).ok  # the slot is usable again


def test_bad_output(sb: ProcessSandbox) -> None:
    r = sb.run(spec("NotJson"), payload(), Limits())
    assert r.error_kind == "bad_output" and "not JSON-serialisable" in r.error


def test_crash(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Segfault"), payload(), Limits())
    assert (r.error_kind, r.error) == ("crashed", "connector process killed by signal SIGSEGV")


def test_logs_are_bounded(sb: ProcessSandbox) -> None:
    r = sb.run(spec("Chatty"), payload(), Limits())
    assert r.ok
    assert len(r.logs) == 1001 and r.logs[-1] == "sandbox: 4000 more log lines dropped"


def test_concurrent_runs(sb: ProcessSandbox) -> None:
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results: list[Result] = list(pool.map(lambda _: sb.run(spec("Nap"), payload(), Limits()), range(8)))
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert len({r.output["pid"] for r in results}) == 8
    if ROOT:
        assert {r.output["uid"] for r in results} <= set(sb.uids.values())
    assert time.monotonic() - start < 2  # 4 slots: two rounds of 0.3 s


def test_zygote_restarts_after_sigkill() -> None:
    with ProcessSandbox(preload=["tests.sandbox.hostile"], slots=2) as sb:
        old = sb.zygote_pid
        assert old
        # Dies mid-attempt: the attempt fails (retryably), its processes die with the zygote.
        timer = threading.Timer(0.3, os.kill, (old, signal.SIGKILL))
        timer.start()
        r = sb.run(spec("Sleep"), payload(), Limits(timeout_seconds=5))
        timer.join()
        assert (r.error_kind, r.retryable) == ("crashed", True), r
        assert r.duration_ms < 2000
        # Dead between attempts: replaced transparently.
        r = sb.run(spec("Echo"), payload(), Limits())
        assert r.ok, r
        new = sb.zygote_pid
        assert new and new != old
        os.kill(new, signal.SIGKILL)
        time.sleep(0.1)
        r = sb.run(spec("Echo"), payload(), Limits())
        assert r.ok, r
        assert_nothing_left(sb)
    assert sb.zygote_pid is None


def test_cold_mode() -> None:
    with ProcessSandbox(slots=1, warm=False) as sb:
        assert sb.zygote_pid is None
        r = sb.run(spec("Echo"), payload(), Limits())
        assert r.ok, r
        r = sb.run(spec("Sleep"), payload(), Limits(timeout_seconds=0.5))
        assert r.error_kind == "timeout"


def test_close_stops_everything() -> None:
    sb = ProcessSandbox(slots=1)
    pid = sb.zygote_pid
    assert pid
    sb.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError):
        sb.run(spec("Echo"), payload(), Limits())


def test_rejects_other_kinds(sb: ProcessSandbox) -> None:
    with pytest.raises(ValueError):
        sb.run(ConnectorSpec("wasm", "x.wasm"), payload(), Limits())
