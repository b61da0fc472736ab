"""The subprocess sandbox: every attempt in a fresh process forked from a warm, secret-free parent.

::

    sandbox = ProcessSandbox(preload=["connectors.http"], slots=4)
    result = sandbox.run(ConnectorSpec("python", "connectors.http:Http"), payload, Limits())
    sandbox.close()

How an attempt is boxed (details in :mod:`sandbox._process_child`):

- a zygote (``python -I``, empty environment, ``hub.sdk`` and the connector modules pre-imported)
  forks one child per attempt, so an attempt costs a fork, not an interpreter start;
- the child gets its own session/process group, rlimits (address space, CPU, processes, open files,
  file size, no core dumps), a private temp dir as cwd and ``TMPDIR``, an empty environment, fds
  0-2 on ``/dev/null``, and an empty network namespace unless ``limits.network``;
- as root (production and CI), the child of each slot drops to a uid/gid of its own: it cannot
  read the hub's ``/proc/<pid>/environ`` nor root-only (0600/0700) files — keep the hub's database,
  data dir and secret key root-only — and ``RLIMIT_NPROC`` counts per slot;
- the parent enforces the wall-clock timeout and the output cap by asking the zygote to kill the
  child's process group; the zygote (a child subreaper) then kills everything the attempt left
  behind before it reports the exit.

What this kernel or user could not enforce is listed in :attr:`ProcessSandbox.not_enforced` and in
every attempt's ``Result.logs`` (lines starting ``sandbox:``).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import Any

from sandbox import ConnectorSpec, Limits, Result
from sandbox._process_zygote import rmtree_forced

__all__ = ["ProcessSandbox"]

MIB = 1 << 20
#: Where slot uids are leased (root only).
LEASE_DIR = "/run/hookhub-sandbox" if os.path.isdir("/run") else "/var/tmp/hookhub-sandbox"
#: Log lines kept per attempt (the child bounds them too; this guards against a forged stream).
MAX_LOG_LINES = 1000
#: How long a killed attempt may take to be reported dead before the zygote is deemed stuck.
KILL_GRACE = 5.0
CANCEL_POLL = 0.1  # how often a running attempt looks at its cancel event
_BOOTSTRAP = """\
import json, site, sys
cfg = json.loads(sys.argv[1])
sys.path[:] = cfg["path"]
for entry in cfg["path"]:
    if entry.endswith("site-packages"):
        site.addsitedir(entry)  # runs .pth files: editable installs hook in through them
from sandbox._process_zygote import main
main(cfg)
"""


class SandboxStartError(RuntimeError):
    """The zygote could not be started."""


class _Lost(Exception):
    """The zygote went away before the attempt started: safe to try again on a new one."""


class _Zygote:
    """One fork server process and its control socket."""

    def __init__(
        self,
        preload: list[str],
        slot_ids: list[int],
        uids: dict[int, int],
        hide: list[str],
        workdir: str,
        timeout: float,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -I: no PYTHON* variables, no user site, no cwd on the path; the venv's path comes via cfg.
        # The real binary, never a pyenv shim (which would cost ~200 ms and read the environment).
        cfg = {
            "path": [p or os.getcwd() for p in sys.path],
            "preload": preload,
            "slot_ids": slot_ids,
            "uids": uids,
            "hide": hide,
            "workdir": workdir,
            "control_fd": theirs.fileno(),
            "parent_pid": os.getpid(),
        }
        try:
            self.proc = subprocess.Popen(
                [os.path.realpath(sys.executable), "-I", "-c", _BOOTSTRAP, json.dumps(cfg)],
                env={},  # no secrets to leak, even to code that escapes the child's jail
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,  # no terminal signals (Ctrl-C) to the zygote
                cwd="/",
            )
        except OSError as exc:
            ours.close()
            raise SandboxStartError(f"sandbox zygote did not start: {exc}") from exc
        finally:
            theirs.close()
        self.control = ours
        self.lock = threading.Lock()
        self.broken = False
        ours.settimeout(timeout)
        try:
            ready = json.loads(ours.recv(1 << 16) or b"{}")
        except (OSError, ValueError) as exc:
            ready = {"error": str(exc)}
        if not ready.get("ready"):
            self.kill()
            raise SandboxStartError(f"sandbox zygote did not start: {ready.get('error', 'it exited')}")
        ours.settimeout(None)
        self.pid: int = ready["pid"]
        self.not_enforced: list[str] = ready["not_enforced"]
        self.preload_errors: dict[str, str] = ready["preload_errors"]
        self.exposed: list[str] = ready["exposed"]

    def alive(self) -> bool:
        return not self.broken and self.proc.poll() is None

    def send(self, req: dict[str, Any], fds: list[int]) -> None:
        with self.lock:
            self.control.sendmsg(
                [json.dumps(req).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
            )

    def close(self) -> None:
        # EOF on the control socket: the zygote kills its attempts and exits.
        self.control.close()
        try:
            self.proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.broken = True
        self.control.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ProcessSandbox:
    """Runs Python connectors in jailed processes forked from a warm zygote. Thread-safe.

    :param preload: modules to import in the zygote (the connector modules), so attempts do not
        pay for the import. Other targets still work; they are imported per attempt.
    :param slots: how many attempts run at once; more ``run()`` calls wait for a free slot. As root
        each slot has its own uid and empty network namespace.
    :param warm: ``False`` starts a fresh interpreter per attempt (slow; for comparison).
    :param uid_base: as root, slot uids (= gids) are leased from ``uid_base`` up to ``uid_base + 999``
        with a lock file each in :data:`LEASE_DIR`, so that sandboxes of several hub processes on one
        host never share a uid (a uid's processes are swept with ``kill(-1)``). The range must
        belong to no real account; uids that do are skipped.
    :param hide: paths attempts must not see at all (as root): the hub's data dir, key files. Each
        is covered by an empty unreadable tmpfs (directories) or ``/dev/null`` (files).
    :param start_timeout: how long the zygote may take to start and import ``preload``.
    """

    def __init__(
        self,
        preload: Iterable[str] = (),
        slots: int = 4,
        *,
        warm: bool = True,
        uid_base: int = 61000,
        hide: Iterable[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.preload = list(preload)
        self.slots = slots
        self.warm = warm
        self.uid_base = uid_base
        self._leases: list[int] = []
        #: slot -> uid the slot's attempts run as (empty unless root)
        self.uids: dict[int, int] = {}
        if os.geteuid() == 0:
            self.uids, self._leases = _lease_uids(uid_base, slots)
        self.hide = [os.path.abspath(p) for p in hide]
        self.start_timeout = start_timeout
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(slots):
            self._free.put(slot)
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        #: slot -> the status socket of its last attempt, until the zygote reports that attempt's end
        self._ending: dict[int, tuple[_Zygote, socket.socket]] = {}
        self._closed = False
        # Root-owned and not listable: slot uids can reach only their own attempt dir.
        self._base = tempfile.mkdtemp(prefix="hookhub-sandbox-")
        os.chmod(self._base, 0o711)
        self.not_enforced: list[str] = []
        self.preload_errors: dict[str, str] = {}
        if warm:
            self._get_zygote()

    # -- public ---------------------------------------------------------------------------------

    @property
    def zygote_pid(self) -> int | None:
        """The warm zygote's pid (``None`` before it starts, when cold, or after ``close()``)."""
        z = self._zygote
        return z.pid if z is not None and z.alive() else None

    def run(self, spec: ConnectorSpec, payload: dict[str, Any], limits: Limits | None = None,
            cancel: threading.Event | None = None) -> Result:
        """Run one attempt; never raises for anything the connector does.

        Waits for a free slot first. Raises ``TypeError`` if ``payload`` is not JSON-serialisable
        and ``ValueError`` for a non-python ``spec``: both are the caller's bugs. Setting ``cancel``
        kills the attempt's process group (checked about every 0.1 s) and returns a failed result
        with ``error_kind="cancelled"``.
        """
        if spec.kind != "python":
            raise ValueError(f"ProcessSandbox runs python connectors, not {spec.kind!r}")
        if self._closed:
            raise RuntimeError("ProcessSandbox is closed")
        limits = limits or Limits()
        body = json.dumps(payload).encode()
        if cancel is not None and cancel.is_set():
            return Result(ok=False, error="cancelled before it started", error_kind="cancelled")
        slot = self._free.get()
        start = time.monotonic()
        try:
            self._settle(slot)
            result = self._run_in_slot(spec, body, limits, slot, cancel)
        finally:
            self._free.put(slot)
        result.duration_ms = (time.monotonic() - start) * 1000
        return result

    def _settle(self, slot: int) -> None:
        """Wait until the slot's previous attempt is gone: its processes killed and reaped, its temp dir
        removed. ``run()`` returns as soon as an attempt's result arrives (and has it killed), so this
        teardown overlaps the caller's own work; it is only waited for when the slot is reused."""
        ending = self._ending.pop(slot, None)
        if ending is None:
            return
        z, status = ending
        with status:
            status.settimeout(KILL_GRACE)
            try:
                msg = status.recv(4096)  # the exit report
            except TimeoutError:  # no word within the grace: the zygote is stuck; replace it
                self._discard(z)
                return
            except OSError:  # reset: the zygote closed it (its kill message crossing ours)
                msg = b""
        # The zygote closes the socket only once it has finished the attempt, or by dying.
        if not msg and not z.alive():
            z.broken = True  # its children died with it

    def close(self) -> None:
        """Stop the zygote (and with it any attempt still running)."""
        for slot in list(self._ending):
            self._settle(slot)
        self._closed = True
        with self._lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None
        rmtree_forced(self._base)
        for fd in self._leases:
            os.close(fd)
        self._leases = []

    def __enter__(self) -> ProcessSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _start(self, preload: list[str], slot_ids: list[int]) -> _Zygote:
        uids = {slot: self.uids[slot] for slot in slot_ids if slot in self.uids}
        z = _Zygote(preload, slot_ids, uids, self.hide, self._base, self.start_timeout)
        self.not_enforced = z.not_enforced
        self.preload_errors.update(z.preload_errors)
        return z

    def _get_zygote(self) -> _Zygote:
        with self._lock:
            if self._zygote is None or not self._zygote.alive():
                if self._zygote is not None:
                    self._zygote.kill()
                    self._zygote = None
                # A zygote that died mid-attempt could not remove its attempts' temp dirs (no attempt
                # outlives its zygote, so whatever is here is left over).
                for entry in os.listdir(self._base):
                    rmtree_forced(os.path.join(self._base, entry))
                self._zygote = self._start(self.preload, list(range(self.slots)))
            return self._zygote

    def _discard(self, z: _Zygote) -> None:
        with self._lock:
            z.kill()
            if self._zygote is z:
                self._zygote = None

    def _run_in_slot(self, spec: ConnectorSpec, body: bytes, limits: Limits, slot: int,
                     cancel: threading.Event | None = None) -> Result:
        req = {
            "op": "run",
            "target": spec.target,
            "slot": slot,
            "limits": {
                "timeout_seconds": limits.timeout_seconds,
                "memory_mb": limits.memory_mb,
                "network": limits.network,
                "max_output_bytes": limits.max_output_bytes,
                "max_file_bytes": limits.max_file_bytes,
                "max_open_files": limits.max_open_files,
                "max_processes": limits.max_processes,
            },
        }
        for _ in range(2):  # a zygote found dead before the child started is replaced once
            try:
                # Cold: a fresh interpreter that imports just this target, for one attempt.
                z = self._get_zygote() if self.warm else self._start([spec.target.partition(":")[0]], [slot])
            except SandboxStartError as exc:
                return Result(ok=False, error=str(exc), error_kind="crashed", retryable=True)
            try:
                attempt = _Attempt(z, req, body, limits, cancel)
                result = attempt.run()
                if attempt.ending is not None:
                    self._ending[slot] = (z, attempt.ending)
                return result
            except _Lost:
                self._discard(z)
            finally:
                if not self.warm:
                    self._settle(slot)
                    z.close()
        return Result(ok=False, error="sandbox zygote keeps dying", error_kind="crashed", retryable=True)


class _Attempt:
    """The parent's side of one attempt: feed the payload, collect frames, enforce time and size."""

    def __init__(self, z: _Zygote, req: dict[str, Any], body: bytes, limits: Limits,
                 cancel: threading.Event | None = None) -> None:
        self.z = z
        self.cancel = cancel
        self.req = req
        self.body = body
        self.limits = limits
        self.buf = b""
        self.total = 0
        self.logs: list[str] = []
        self.dropped = 0
        self.result: dict[str, Any] | None = None
        self.killed_for: str | None = None
        #: the status socket, left open when the result came before the exit (see ProcessSandbox._settle)
        self.ending: socket.socket | None = None
        # One result line may be the output plus JSON framing; log lines are far shorter.
        self.max_line = limits.max_output_bytes + (64 << 10)
        self.max_total = self.max_line + 8 * MIB

    def run(self) -> Result:
        data, child_data = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        status, zygote_status = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with data, contextlib.ExitStack() as closing:
            closing.callback(lambda: self.ending is None and status.close())
            try:
                self.z.send(self.req, [child_data.fileno(), zygote_status.fileno()])
            except OSError as exc:
                raise _Lost from exc
            finally:
                child_data.close()
                zygote_status.close()
            status.settimeout(KILL_GRACE)
            try:
                first = json.loads(status.recv(4096) or b"{}")
            except (OSError, ValueError) as exc:
                raise _Lost from exc
            if "pid" not in first:
                if "error" in first:
                    return Result(ok=False, error=first["error"], error_kind="crashed", retryable=True)
                raise _Lost
            self.status = status
            exit_info = self._watch(data, status)
        return self._classify(exit_info)

    def _kill(self, why: str) -> None:
        if self.killed_for is None:
            self.killed_for = why
            self.killed_at = time.monotonic()
            try:
                self.status.send(b'{"kill": true}')
            except OSError:
                pass

    def _watch(self, data: socket.socket, status: socket.socket) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.limits.timeout_seconds
        data.settimeout(self.limits.timeout_seconds)
        try:
            data.sendall(self.body)
            data.shutdown(socket.SHUT_WR)
        except TimeoutError:
            self._kill("timeout")
        except OSError:
            pass  # the child died before reading; the exit status says why
        data.setblocking(False)
        status.setblocking(False)
        with selectors.DefaultSelector() as sel:
            sel.register(data, selectors.EVENT_READ)
            sel.register(status, selectors.EVENT_READ)
            reading = True
            while True:
                now = time.monotonic()
                if self.killed_for is None and now >= deadline:
                    self._kill("timeout")
                if self.killed_for is None and self.cancel is not None and self.cancel.is_set():
                    self._kill("cancelled")
                if self.killed_for is not None and now >= self.killed_at + KILL_GRACE:
                    # The zygote did not report the kill: it is stuck. Replace it.
                    self.z.kill()
                    return None
                wait = deadline - now if self.killed_for is None else self.killed_at + KILL_GRACE - now
                if self.cancel is not None and self.killed_for is None:
                    wait = min(wait, CANCEL_POLL)  # an Event cannot wake select(): look every so often
                for key, _ in sel.select(max(wait, 0)):
                    if key.fileobj is data:
                        reading = self._read(data)
                        if self.result is not None and self.killed_for is None:
                            # The result is the attempt's last word: answer now and have whatever is
                            # left of it killed; its end is collected before the slot runs again.
                            self._kill("done")
                            self.ending = status
                            return None
                        if not reading:
                            sel.unregister(data)
                    else:
                        try:
                            msg = status.recv(4096)
                        except BlockingIOError:
                            continue
                        except OSError:
                            msg = b""
                        if not msg:
                            self.z.broken = True  # the zygote died; its children die with it
                            return None
                        exit_info: dict[str, Any] = json.loads(msg)["exit"]
                        # Everything the child wrote is buffered by now: drain it.
                        while reading and self._read(data):
                            pass
                        return exit_info

    def _read(self, data: socket.socket) -> bool:
        """Read what is there; False on EOF or nothing more to read now."""
        try:
            chunk = data.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            return False
        if self.killed_for is not None:
            return True  # being killed: discard
        self.total += len(chunk)
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self._frame(line)
        if self.total > self.max_total or len(self.buf) > self.max_line:
            self._kill("output_too_large")
        return True

    def _frame(self, line: bytes) -> None:
        if len(line) > self.max_line:
            self._kill("output_too_large")
            return
        try:
            msg = json.loads(line)
        except ValueError:
            return  # not ours: connector code wrote to fd 3 directly
        if not isinstance(msg, dict):
            return
        if "log" in msg:
            if len(self.logs) < MAX_LOG_LINES:
                self.logs.append(str(msg["log"]))
            else:
                self.dropped += 1
        elif "result" in msg and self.result is None and isinstance(msg["result"], dict):
            self.result = msg["result"]

    def _classify(self, exit_info: dict[str, Any] | None) -> Result:
        limits = self.limits
        dropped = self.dropped + int((self.result or {}).get("dropped_logs", 0))
        logs = self.logs + ([f"sandbox: {dropped} more log lines dropped"] if dropped else [])

        def fail(error: str, kind: str, retryable: bool = False, retry_after: float | None = None) -> Result:
            return Result(
                ok=False,
                error=error,
                error_kind=kind,
                retryable=retryable,
                retry_after=retry_after,
                logs=logs,
            )

        too_large = f"output larger than {_size(limits.max_output_bytes)}"
        if self.killed_for == "cancelled":
            return fail("cancelled while running", "cancelled")
        if self.killed_for == "timeout":
            return fail(f"timed out after {_num(limits.timeout_seconds)} s", "timeout", retryable=True)
        if self.killed_for == "output_too_large":
            return fail(too_large, "output_too_large")
        res = self.result
        if res is not None and "output" in res:
            return Result(ok=True, output=res["output"], logs=logs)
        if res is not None and isinstance(res.get("error"), dict):
            err = res["error"]
            kind = err.get("kind")
            if kind == "memory":
                return fail(f"exceeded memory limit {limits.memory_mb} MiB", "memory")
            if kind == "output_too_large":
                return fail(too_large, "output_too_large")
            if kind == "bad_output":
                return fail(str(err.get("message")), "bad_output")
            retry_after = err.get("retry_after")
            return fail(
                str(err.get("message")),
                "connector",
                bool(err.get("retryable")),
                float(retry_after) if isinstance(retry_after, int | float) else None,
            )
        if exit_info is None:
            return fail("sandbox zygote died during the attempt", "crashed", retryable=True)
        sig = exit_info.get("signal")
        if sig == signal.SIGXCPU:
            cpu = _num(_cpu_limit(limits))
            return fail(f"timed out: used more than {cpu} s of CPU", "timeout", retryable=True)
        if sig:
            return fail(f"connector process killed by signal {_signame(sig)}", "crashed", retryable=True)
        return fail(
            f"connector process exited with code {exit_info.get('code')} without a result",
            "crashed",
            retryable=True,
        )


def _lease_uids(base: int, count: int, span: int = 1000) -> tuple[dict[int, int], list[int]]:
    """Take ``count`` uids no other live sandbox on this host holds: an flock'ed file per uid.

    A lease ends with the process (or ``close()``); whoever takes the uid next sweeps what a dead
    holder may have left running with it.
    """
    import fcntl
    import pwd

    os.makedirs(LEASE_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(LEASE_DIR)
    if st.st_uid != 0 or st.st_mode & 0o022 or not os.path.isdir(LEASE_DIR):
        raise SandboxStartError(f"{LEASE_DIR} must be a directory owned and writable only by root")
    uids: dict[int, int] = {}
    fds: list[int] = []
    for uid in range(base, base + span):
        if len(uids) == count:
            break
        try:
            pwd.getpwuid(uid)
            continue  # a real account
        except KeyError:
            pass
        fd = os.open(os.path.join(LEASE_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        uids[len(uids)] = uid
        fds.append(fd)
    if len(uids) < count:
        for fd in fds:
            os.close(fd)
        raise SandboxStartError(f"no {count} free sandbox uids in {base}..{base + span - 1}")
    return uids, fds


def _cpu_limit(limits: Limits) -> int:
    import math

    return math.ceil(limits.timeout_seconds) + 1


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _num(x: float) -> str:
    return f"{x:g}"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
