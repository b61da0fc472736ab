"""The warm fork server ("zygote") of :mod:`sandbox.process`.

Started by :class:`sandbox.process.ProcessSandbox` as ``python -I -c ...`` with an empty environment,
so it holds no secrets. It pre-imports ``hub.sdk`` and the connector modules, then forks one child
per attempt. It is single-threaded (forking is only safe that way) and never runs connector code
itself: every child jails itself before touching the payload.

Protocol (all JSON):

- control socket (SOCK_SEQPACKET, one per zygote): the zygote first sends ``{"ready": ...}``; the
  parent then sends ``{"op": "run", ...}`` requests carrying two fds via SCM_RIGHTS — the attempt's
  data socket (payload in, frames out; the zygote only hands it to the child) and its status socket.
- status socket (SOCK_SEQPACKET, one per attempt): the zygote answers ``{"pid": N}`` (or
  ``{"error": ...}``) and, once the child is reaped and everything it left behind is killed,
  ``{"exit": {"code": C, "signal": S}}``. The parent sends ``{"kill": true}`` on timeout; EOF from
  the parent kills the attempt too.
"""

from __future__ import annotations

import array
import ctypes
import gc
import json
import os
import selectors
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def unshare(flags: int) -> None:
    # os.unshare only exists from Python 3.12 on.
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


@dataclass
class _Attempt:
    pid: int
    status: socket.socket
    slot: int
    uid: int | None
    tmpdir: str


class Zygote:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.control = socket.socket(fileno=cfg["control_fd"])
        self.slot_ids: list[int] = cfg["slot_ids"]
        # slot -> uid, leased by the parent for this sandbox alone (JSON keys are strings)
        self.uids: dict[int, int] = {int(k): v for k, v in cfg["uids"].items()}
        self.root = os.geteuid() == 0
        self.not_enforced: list[str] = []
        self.netns: dict[int, int] = {}
        self.mntns: int | None = None
        self.exposed: list[str] = []
        self.workdir: str = cfg["workdir"]
        self.attempts: dict[int, _Attempt] = {}
        self.by_status_fd: dict[int, int] = {}
        self.sel = selectors.DefaultSelector()

    # -- start-up -------------------------------------------------------------------------------

    def setup(self, parent_pid: int) -> None:
        # Die with the hub process; children that orphan themselves are re-parented to us, so we
        # can find and kill everything an attempt leaves behind.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)
        prctl(PR_SET_CHILD_SUBREAPER, 1)

    def make_jail(self, hide: list[str], workdir: str) -> None:
        """Namespaces for the children; after the imports, so the mount plan sees every module."""
        if self.root:
            self._make_netns()
            try:
                from sandbox._process_mounts import make_namespace

                self.mntns, self.exposed = make_namespace(hide, workdir)
            except OSError as exc:
                self.not_enforced.append(
                    f"mount namespace unavailable ({exc.strerror or exc}): hidden paths are visible and "
                    "a Python under a private directory is unreadable after the uid drop"
                )
            for slot in self.slot_ids:
                self._sweep_uid(self.uids[slot])  # leftovers of a zygote that was killed
        else:
            self.not_enforced.append(
                f"not running as root (uid {os.geteuid()}): attempts run as the hub's own user, "
                "RLIMIT_NPROC is shared and there is no network isolation"
            )

    def _make_netns(self) -> None:
        # One empty network namespace per slot, made once: unshare() per fork costs ~0.7 ms and
        # leaves namespace teardown work to the kernel; setns() into a ready one is free.
        try:
            orig = os.open("/proc/self/ns/net", os.O_RDONLY)
            try:
                for slot in self.slot_ids:
                    unshare(CLONE_NEWNET)
                    self.netns[slot] = os.open("/proc/self/ns/net", os.O_RDONLY)
                    setns(orig, CLONE_NEWNET)
            finally:
                os.close(orig)
        except OSError as exc:
            for fd in self.netns.values():
                os.close(fd)
            self.netns.clear()
            self.not_enforced.append(f"network isolation unavailable ({exc.strerror or exc})")

    # -- main loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake = (wake_r, wake_w)
        self.sel.register(self.control, selectors.EVENT_READ, "control")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in self.sel.select():
                if key.data == "control":
                    if not self._on_control():
                        self.shutdown()
                        return
                elif key.data == "wake":
                    try:
                        while wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    self._reap()
                else:
                    self._on_status(key.data)
            self._reap()  # a SIGCHLD may have arrived while we were busy

    def _on_control(self) -> bool:
        fds = array.array("i")
        try:
            msg, anc, _flags, _addr = self.control.recvmsg(1 << 16, socket.CMSG_SPACE(8 * fds.itemsize))
        except InterruptedError:
            return True
        except OSError:
            return False
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if not msg:
            for fd in fds:
                os.close(fd)
            return False
        req = json.loads(msg)
        if req.get("op") == "run" and len(fds) == 2:
            self._spawn(req, fds[0], fds[1])
        else:
            for fd in fds:
                os.close(fd)
        return True

    def _spawn(self, req: dict[str, Any], data_fd: int, status_fd: int) -> None:
        status = socket.socket(fileno=status_fd)
        slot = int(req["slot"])
        uid = self.uids.get(slot) if self.root else None
        try:
            # The attempt's private temp dir is made and removed here, in this single-threaded
            # process, rather than in the hub's worker where it would contend for the GIL.
            req["tmpdir"] = tempfile.mkdtemp(prefix=f"slot{slot}-", dir=self.workdir)
            pid = os.fork()
        except OSError as exc:
            os.close(data_fd)
            _send(status, {"error": f"fork failed: {exc}"})
            status.close()
            return
        if pid == 0:
            self._child(req, data_fd, slot, uid)  # never returns
        os.close(data_fd)
        self.attempts[pid] = _Attempt(pid, status, slot, uid, req["tmpdir"])
        self.by_status_fd[status.fileno()] = pid
        self.sel.register(status, selectors.EVENT_READ, pid)
        _send(status, {"pid": pid})

    def _child(self, req: dict[str, Any], data_fd: int, slot: int, uid: int | None) -> None:
        try:
            from sandbox import _process_child

            netns = None if req["limits"]["network"] else self.netns.get(slot)
            keep = [self.control, *self.wake, *(a.status for a in self.attempts.values())]
            for sock in keep:
                sock.detach()  # their fds are closed below; stop the objects closing reused numbers
            signal.set_wakeup_fd(-1)
            code = _process_child.main(req, data_fd, netns, self.mntns, uid, self.not_enforced)
        except BaseException:
            code = 70
        os._exit(code)

    def _on_status(self, pid: int) -> None:
        att = self.attempts.get(pid)
        if att is None:
            return
        try:
            msg = att.status.recv(4096)
        except OSError:
            msg = b""
        if not msg:
            # The parent gave up on this attempt: kill it, but keep watching for its exit.
            self.sel.unregister(att.status)
        _killpg(pid)

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            if info.si_pid in self.attempts:
                self._finish(self.attempts.pop(info.si_pid))
            else:
                _reap_one(info.si_pid)

    def _finish(self, att: _Attempt) -> None:
        # The child is a zombie until waitpid: its pid (and process group id) cannot be reused
        # yet, so killing the group here cannot hit a stranger.
        _killpg(att.pid)
        status = _reap_one(att.pid)
        self._kill_strays(att)
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        exit_info = {
            "code": code if code is not None and code >= 0 else None,
            "signal": -code if code is not None and code < 0 else None,
        }
        try:
            self.sel.unregister(att.status)
        except (KeyError, ValueError):
            pass
        self.by_status_fd.pop(att.status.fileno(), None)
        rmtree_forced(att.tmpdir)
        # Read what the parent sent first (its kill once the result came): closing a socket with
        # unread data would reset the connection and lose the exit report below.
        att.status.setblocking(False)
        try:
            while att.status.recv(4096):
                pass
        except OSError:
            pass
        _send(att.status, {"exit": exit_info})
        att.status.close()

    def _kill_strays(self, att: _Attempt) -> None:
        """Kill what the attempt left running: re-parented orphans land on us (a subreaper)."""
        strays = [pid for pid in _children() if pid not in self.attempts]
        if att.uid is not None:
            # Everything with the slot's uid belongs to this attempt (slots are exclusive).
            if any(_uid_of(pid) == att.uid for pid in strays):
                self._sweep_uid(att.uid)
        else:
            for pid in strays:  # without uids we cannot tell attempts apart: kill them all
                _kill(pid)

    def _sweep_uid(self, uid: int) -> None:
        """kill(-1) from a helper running as ``uid``: kills every process of that uid, wherever it is."""
        try:
            pid = os.fork()
        except OSError:
            return
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                for _ in range(3):  # a process forking during a pass is caught by the next one
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except ProcessLookupError:
                        break
            finally:
                os._exit(0)
        _reap_one(pid)

    def shutdown(self) -> None:
        for pid in list(self.attempts):
            _killpg(pid)
        if self.root:
            for slot in self.slot_ids:
                self._sweep_uid(self.uids[slot])


def rmtree_forced(path: str) -> None:
    """Remove a tree an attempt wrote, whatever modes it left on it."""
    def fix(func: Any, p: str, _exc: Any) -> None:
        # A connector may chmod 000 its own dirs; root does not care, other users do.
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(msg).encode())
    except OSError:
        pass  # the parent went away; nothing to tell


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_one(pid: int) -> int | None:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return None


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(cfg: dict[str, Any]) -> None:
    """Entry point; ``sys.path`` was set up by the bootstrap in :mod:`sandbox.process`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    zygote = Zygote(cfg)
    try:
        zygote.setup(cfg["parent_pid"])
        preload_errors = {}
        import hub.sdk  # noqa: F401
        from sandbox import _process_child  # noqa: F401

        for name in cfg["preload"]:
            try:
                __import__(name)
            except BaseException as exc:  # a broken connector package must not take the hub down
                preload_errors[name] = f"{type(exc).__name__}: {exc}"
        _process_child.warm_schemas([n for n in cfg["preload"] if n not in preload_errors])
        zygote.make_jail(cfg["hide"], cfg["workdir"])
        # Move everything imported so far out of the collector's reach: a child's collections would
        # otherwise write to (and so copy) every page of the inherited heap.
        gc.collect()
        gc.freeze()
        _send(
            zygote.control,
            {
                "ready": True,
                "pid": os.getpid(),
                "not_enforced": zygote.not_enforced,
                "preload_errors": preload_errors,
                "exposed": zygote.exposed,
            },
        )
    except BaseException as exc:
        _send(zygote.control, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    zygote.serve()
