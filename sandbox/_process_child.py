"""One attempt, inside a child forked by the zygote (see :mod:`sandbox._process_zygote`).

The child first jails itself (session, network namespace, fds, rlimits, private temp dir, uid,
environment) and only then reads the payload and runs connector code. It speaks newline-delimited
JSON frames on fd 3: ``{"log": line}`` as the connector logs (so a timed-out attempt still has its
logs) and a final ``{"result": {"output": ...}}`` or ``{"result": {"error": {...}}}``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import mmap
import os
import resource
import signal
import socket
import tempfile
import traceback
from typing import Any

from sandbox._process_zygote import CLONE_NEWNET, setns

DATA_FD = 3
MAX_LOG_LINES = 1000
MAX_LOG_BYTES = 256 << 10
MAX_LOG_LINE = 8 << 10
MIB = 1 << 20


def main(
    req: dict[str, Any],
    data_fd: int,
    netns: int | None,
    mntns: int | None,
    uid: int | None,
    zygote_notes: list[str],
) -> int:
    """Jail this process, run the attempt and return the exit code (the caller ``_exit``s)."""
    limits = req["limits"]
    notes = list(zygote_notes)
    os.setsid()  # own process group: the zygote kills the whole group at the end
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    # Past RLIMIT_FSIZE a write should fail with EFBIG, not kill the attempt.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    if not limits["network"]:
        if netns is not None:
            setns(netns, CLONE_NEWNET)
        elif not any("network" in n for n in notes):
            notes.append("network isolation not enforced")

    if mntns is not None:
        from sandbox._process_mounts import CLONE_NEWNS

        setns(mntns, CLONE_NEWNS)

    # fds: 0-2 to /dev/null so connector prints cannot corrupt the protocol; the data socket on 3;
    # everything of the zygote's (control socket, other attempts' sockets, netns fds) closed.
    nul = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(nul, fd)
    if data_fd != DATA_FD:
        os.dup2(data_fd, DATA_FD)
    os.closerange(DATA_FD + 1, 1 << 20)

    mem = int(limits["memory_mb"]) * MIB
    cpu = math.ceil(float(limits["timeout_seconds"])) + 1
    for res, value in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, int(limits["max_file_bytes"])),
        (resource.RLIMIT_NOFILE, int(limits["max_open_files"])),
    ):
        resource.setrlimit(res, (value, value))
    # Soft limit sends SIGXCPU, the hard one a second later SIGKILL; the wall clock usually wins.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))

    tmpdir = req["tmpdir"]
    if uid is not None:
        os.chown(tmpdir, uid, uid)
        # RLIMIT_NPROC counts per uid and is ignored for root: it only means something after
        # dropping to the slot's own uid.
        nproc = int(limits["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        from sandbox._process_zygote import PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, prctl

        prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, ping) cannot give root back
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # setuid cleared it; die with the zygote
        # setuid() from root made us non-dumpable, which hides our own /proc/self from us.
        prctl(PR_SET_DUMPABLE, 1)
    os.chdir(tmpdir)
    os.environ.clear()
    os.environ["TMPDIR"] = tmpdir
    tempfile.tempdir = tmpdir

    sock = socket.socket(fileno=DATA_FD)
    out = _Emitter(sock)
    for note in notes:
        out.log(f"sandbox: {note}")
    try:
        payload = json.loads(_read_all(sock))
        out.result(_run(req, payload, out, int(limits["max_output_bytes"])))
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the parent stopped listening (timeout, output too large)
    return 0


def _run(req: dict[str, Any], payload: dict[str, Any], out: _Emitter, max_output: int) -> dict[str, Any]:
    from hub.sdk import ConnectorError, Context

    # Freed on MemoryError so there is room left to report it. RLIMIT_AS counts address space, so an
    # untouched mapping reserves as much as a filled buffer without faulting in 256 pages.
    reserve = mmap.mmap(-1, MIB)
    target = req["target"]
    try:
        try:
            cls = _load(target)
        except Exception as exc:
            return _error("connector", f"cannot load connector {target!r}: {type(exc).__name__}: {exc}")
        import marshmallow

        try:
            config = config_schema(cls).load(payload.get("config") or {})
        except marshmallow.ValidationError as exc:
            return _error("connector", f"invalid config: {json.dumps(exc.messages, default=str)}")
        c = payload.get("context") or {}
        run_id, node_id, attempt = c.get("run_id", 0), c.get("node_id", ""), c.get("attempt", 1)
        key = c.get("idempotency_key") or hashlib.sha256(f"{run_id}:{node_id}:{attempt}".encode()).hexdigest()
        ctx = Context(
            input=payload.get("input"),
            run_id=run_id,
            node_id=node_id,
            attempt=attempt,
            idempotency_key=key,
            allowed_private_networks=tuple(c.get("allowed_private_networks", ())),
            log=out.logger,
        )
        output = cls().run(config, ctx)
    except MemoryError:
        del reserve
        return _error("memory", "MemoryError")
    except ConnectorError as exc:
        return _error("connector", exc.message, retryable=exc.retryable, retry_after=exc.retry_after)
    except BaseException as exc:  # noqa: B036 - SystemExit, KeyboardInterrupt: all the connector's fault
        return _unexpected(exc, out)
    try:
        encoded = json.dumps(output, allow_nan=False, separators=(",", ":"))
    except MemoryError:
        del reserve
        return _error("memory", "MemoryError while encoding the output")
    except (TypeError, ValueError, RecursionError) as exc:
        return _error("bad_output", f"output is not JSON-serialisable: {exc}")
    if len(encoded) > max_output:
        return _error("output_too_large", f"{len(encoded)} bytes")
    return {"output_json": encoded}


def _unexpected(exc: BaseException, out: _Emitter) -> dict[str, Any]:
    # Like Temporal: an unexpected exception is retryable; the node's retry policy has the last word.
    tb = "".join(traceback.format_exception(exc))
    out.log(tb[-MAX_LOG_LINE:].rstrip())
    return _error("connector", f"{type(exc).__name__}: {exc}", retryable=True)


def _error(kind: str, message: str, *, retryable: bool = False, retry_after: float | None = None) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message, "retryable": retryable, "retry_after": retry_after}}


_SCHEMAS: dict[type, Any] = {}


def config_schema(cls: type) -> Any:
    """One ``Config`` schema instance per connector class (making one deep-copies its fields: ~0.5 ms).
    The zygote fills this for preloaded connectors (:func:`warm_schemas`), so children only read it."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = cls.Config()
    return schema


def warm_schemas(module_names: list[str]) -> None:
    """Build the config schemas of every connector class in these (already imported) modules."""
    import sys

    from hub.sdk import Connector

    for name in module_names:
        for obj in list(vars(sys.modules.get(name) or object).values()):
            if isinstance(obj, type) and issubclass(obj, Connector) and obj is not Connector:
                try:
                    config_schema(obj)
                except Exception:  # a broken schema fails its own attempts, with their error
                    pass


def _load(target: str) -> type:
    from hub.sdk import Connector

    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        raise TypeError(f"{target} is not a hub.sdk.Connector subclass")
    return obj


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


class _Emitter(logging.Handler):
    """Writes frames; doubles as the logging handler behind ``ctx.log``, bounded in lines and bytes."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(logging.DEBUG)
        self.sock = sock
        self.lines = 0
        self.bytes = 0
        self.dropped = 0
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("hookhub.connector")
        self.logger.setLevel(logging.DEBUG)
        root = logging.getLogger()
        root.handlers[:] = [self]  # connector modules' own loggers end up here too
        root.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log(self.format(record))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception:
            self.handleError(record)

    def log(self, line: str) -> None:
        line = line[:MAX_LOG_LINE]
        if self.lines >= MAX_LOG_LINES or self.bytes + len(line) > MAX_LOG_BYTES:
            self.dropped += 1
            return
        self.lines += 1
        self.bytes += len(line)
        self._frame({"log": line})

    def result(self, res: dict[str, Any]) -> None:
        if self.dropped:
            res["dropped_logs"] = self.dropped
        if "output_json" in res:
            # The output is already encoded: splice it in rather than decode and encode it again.
            encoded = res.pop("output_json")
            rest = json.dumps(res)[1:-1]
            line = '{"result":{"output":' + encoded + ("," + rest if rest else "") + "}}\n"
            self.sock.sendall(line.encode())
        else:
            self._frame({"result": res})

    def _frame(self, msg: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(msg) + "\n").encode())
