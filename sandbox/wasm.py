"""The WASM sandbox: WASI preview1 command modules run with wasmtime.

A connector module reads one JSON document on stdin and writes ``{"output": …}`` or
``{"error": {"message": …, "retryable": bool}}`` on stdout (SPEC §4). Each run gets a fresh
``Store`` with:

- an epoch deadline (one engine-wide ticker thread) and a shadowed ``poll_oneoff``, so neither a
  busy loop nor a ``sleep`` outlives ``limits.timeout_seconds``;
- a store limit on linear memory (``memory.grow`` fails past ``limits.memory_mb``);
- stdin = the payload, stdout/stderr captured in memory with a cap, no argv beyond a program
  name, no environment, no preopened directories. WASI preview1 has no sockets, so a module has
  no network whatever ``limits.network`` says.

Known limits: wasmtime does not tell the host when ``memory.grow`` fails, so "memory" is reported
when a guest dies with its memory within 1/8 of the limit (CPython's ``MemoryError`` is mapped
by the code connector). The epoch ticker is a Python thread: when other threads hog the GIL a
deadline can fire up to a few hundred ms late, never early.

Compiled modules are cached in memory per sandbox and on disk in ``cache_dir``, keyed by the
module's sha256, the engine configuration and the wasmtime version. The ``.cwasm`` files are
native code that wasmtime maps and runs as found: ``cache_dir`` must be writable by the hub
alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import (
    Caller,
    Config,
    Engine,
    ExitTrap,
    FuncType,
    InstancePre,
    Linker,
    Memory,
    Module,
    Store,
    Trap,
    TrapCode,
    ValType,
    WasiConfig,
    WasmtimeError,
)

from . import ConnectorSpec, Limits, Result

__all__ = ["WasmOutcome", "WasmSandbox", "outcome_to_result"]

WASMTIME_VERSION = _dist_version("wasmtime")
TICK_SECONDS = 0.01  # epoch granularity: a deadline is enforced within about one tick
PAGE = 65536
MAX_LOG_BYTES = 64 << 10
MAX_LOG_LINES = 200
MAX_LOG_LINE = 2000
WASI = "wasi_snapshot_preview1"

# The engine's settings; they are part of the disk cache key (a .cwasm loads only into an engine
# compiled with the same settings).
ENGINE_SETTINGS: dict[str, Any] = {
    "epoch_interruption": True,
    "wasm_exceptions": True,  # CPython for WASI (the code connector) throws wasm exceptions
    "cranelift_opt_level": "speed",
}

# WASI preview1 errno values and poll_oneoff layouts.
_ESUCCESS, _EBADF, _EFBIG, _EINVAL = 0, 8, 22, 28
_SUBSCRIPTION = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id|fd, timeout, precision, flags
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, nbytes, flags
_CLOCK, _ABSTIME = 0, 1
_REALTIME, _MONOTONIC = 0, 1


@dataclass
class _Run:
    """Per-run state the host functions see (they run on the thread that called ``run``)."""

    deadline: float  # time.perf_counter() value
    origin_ns: int  # the guest's monotonic clock reads 0 here (set when its WasiConfig is made)
    max_output: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    overflow: bool = False
    #: a sleep was cut short at the deadline: the attempt timed out, whatever the guest does next
    #: (it may finish within the epoch tick before its trap, believing it slept)
    cut_short: bool = False

    def write_stdout(self, data: bytes) -> int:
        # Called from wasmtime's custom-output hook: must not raise.
        if self.overflow or len(self.stdout) + len(data) > self.max_output:
            self.overflow = True
            return -_EFBIG
        self.stdout += data
        return len(data)

    def write_stderr(self, data: bytes) -> int:
        room = MAX_LOG_BYTES - len(self.stderr)
        if room > 0:
            self.stderr += data[:room]
        return len(data)  # the rest is dropped silently: logs are best effort


_current = threading.local()


def _poll_oneoff(caller: Caller, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    """``poll_oneoff`` that never sleeps past the run's deadline.

    Clock subscriptions sleep (on the host, GIL released) until the earliest one fires or the
    deadline passes; descriptor subscriptions (stdio only: there is nothing else) are ready at
    once. After the deadline it returns and the guest's next epoch check traps. It must never
    raise: wasmtime-py keeps a host exception in a process-wide global that another thread's call
    could pick up.
    """
    try:
        run: _Run | None = getattr(_current, "run", None)
        memory = caller.get("memory")
        if run is None or not isinstance(memory, Memory) or nsubs <= 0:
            return _EINVAL
        raw = memory.read(caller, in_ptr, in_ptr + nsubs * _SUBSCRIPTION.size)
        if len(raw) != nsubs * _SUBSCRIPTION.size:
            return _EINVAL
        subs = [_SUBSCRIPTION.unpack_from(raw, i * _SUBSCRIPTION.size) for i in range(nsubs)]
        now_ns = time.perf_counter_ns()
        ready: list[tuple[int, int, int]] = []  # (userdata, error, type)
        wake_ns: int | None = None
        timers: list[tuple[int, int]] = []  # (userdata, due in perf_counter ns)
        for userdata, tag, ident, timeout, _precision, flags in subs:
            if tag == _CLOCK:
                if flags & _ABSTIME:
                    if ident == _MONOTONIC:
                        due = run.origin_ns + timeout
                    elif ident == _REALTIME:
                        due = now_ns + (timeout - time.time_ns())
                    else:
                        ready.append((userdata, _EINVAL, tag))
                        continue
                else:
                    due = now_ns + timeout
                timers.append((userdata, due))
                wake_ns = due if wake_ns is None else min(wake_ns, due)
            elif tag in (1, 2):
                ready.append((userdata, _ESUCCESS if ident <= 2 else _EBADF, tag))
            else:
                return _EINVAL
        if not ready and wake_ns is not None:
            deadline_ns = int(run.deadline * 1e9)
            if now_ns >= deadline_ns:
                # Past the deadline: let the epoch ticker catch up, then return into wasm to trap.
                run.cut_short = True
                time.sleep(TICK_SECONDS)
            else:
                time.sleep(max(0, min(wake_ns, deadline_ns + int(TICK_SECONDS * 1e9)) - now_ns) / 1e9)
            now_ns = time.perf_counter_ns()
            ready = [(u, _ESUCCESS, _CLOCK) for u, due in timers if due <= now_ns]
            if not ready:  # stopped early by the deadline: report the earliest timer anyway
                run.cut_short = True
                ready = [(min(timers, key=lambda t: t[1])[0], _ESUCCESS, _CLOCK)]
        out = bytearray()
        for userdata, error, kind in ready:
            out += _EVENT.pack(userdata, error, kind, 0, 0)
        memory.write(caller, out, out_ptr)
        memory.write(caller, struct.pack("<I", len(ready)), nevents_ptr)
        return _ESUCCESS
    except Exception:
        return _EINVAL


@dataclass
class _Loaded:
    module: Module
    pre: InstancePre
    sha256: str


@dataclass
class WasmOutcome:
    """What a module run produced, before it is read as a connector result."""

    stdout: bytes
    stderr: bytes
    overflow: bool
    exit_code: int | None = None  # None: trapped or failed to start
    failure: str | None = None  # "timeout", "memory" or "crashed"
    message: str | None = None
    duration_ms: float = 0.0


class WasmSandbox:
    """Runs WASI command modules (``ConnectorSpec(kind="wasm", target=path)``); thread-safe.

    ``stats`` counts how modules were obtained: ``compiled`` (from wasm bytes), ``deserialized``
    (from the disk cache) and ``memory_hits`` (already loaded in this sandbox).
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = Config()
        for name, value in ENGINE_SETTINGS.items():
            setattr(config, name, value)
        self._engine = Engine(config)
        key = json.dumps({"wasmtime": WASMTIME_VERSION, **ENGINE_SETTINGS}, sort_keys=True)
        self._config_key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self._lock = threading.Lock()
        self._modules: dict[tuple[Any, ...], _Loaded] = {}
        self._loading: dict[tuple[Any, ...], threading.Lock] = {}
        self.stats = {"compiled": 0, "deserialized": 0, "memory_hits": 0}
        self._closed = threading.Event()
        self._stop_ticker = threading.Event()
        self._idle = threading.Condition()
        self._active = 0  # runs in flight: close() lets them reach their deadlines
        self._epoch_lock = threading.Lock()
        self._epoch_start, self._ticks = time.monotonic(), 0
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    # -- lifecycle -----------------------------------------------------------------------------

    def _tick(self) -> None:
        # Catch up with the wall clock, so a late wake-up does not stretch deadlines.
        while not self._stop_ticker.wait(TICK_SECONDS):
            with self._epoch_lock:
                while self._ticks < self._due_ticks():
                    self._engine.increment_epoch()
                    self._ticks += 1

    def _due_ticks(self) -> int:
        return int((time.monotonic() - self._epoch_start) / TICK_SECONDS)

    def _set_deadline(self, store: Store, timeout: float) -> None:
        # Relative to the epoch the ticker has reached, which may lag the wall clock when the
        # ticker thread was starved (it then catches up at once): add the lag, so a deadline is
        # never early. +1: the next tick may come at once; a deadline is at most one tick late.
        with self._epoch_lock:
            lag = max(0, self._due_ticks() - self._ticks)
            store.set_epoch_deadline(math.ceil(timeout / TICK_SECONDS) + 1 + lag)

    def close(self) -> None:
        """Refuse new runs, wait for those in flight (each ends by its deadline), stop the ticker."""
        self._closed.set()
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0)
        self._stop_ticker.set()
        if self._ticker.is_alive():
            self._ticker.join()
        with self._lock:
            self._modules.clear()

    def __enter__(self) -> WasmSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- modules -------------------------------------------------------------------------------

    def load(self, target: str | os.PathLike[str], *, unknown_imports_trap: bool = False) -> None:
        """Compile (or load from the cache) the module at ``target`` ahead of its first run."""
        self._load(Path(target), unknown_imports_trap)

    def is_compiled(self, target: str | os.PathLike[str]) -> bool:
        """Whether ``target`` is loaded in this sandbox or compiled in the disk cache."""
        path = Path(target)
        with self._lock:
            if any(key[0] == str(path.resolve()) for key in self._modules):
                return True
        return self._cache_file(self._wasm_bytes(path)[1]).is_file()

    def _cache_file(self, digest: str) -> Path:
        return self.cache_dir / f"{digest}-{self._config_key}.cwasm"

    @staticmethod
    def _wasm_bytes(path: Path) -> tuple[bytes, str]:
        data = path.read_bytes()
        if path.suffix == ".wat":
            data = bytes(wasmtime.wat2wasm(data.decode()))
        return data, hashlib.sha256(data).hexdigest()

    def _load(self, path: Path, unknown_imports_trap: bool = False) -> _Loaded:
        st = path.stat()
        key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, unknown_imports_trap)
        with self._lock:
            loaded = self._modules.get(key)
            if loaded is not None:
                self.stats["memory_hits"] += 1
                return loaded
            guard = self._loading.setdefault(key, threading.Lock())
        with guard:  # one thread compiles a module; the others wait for it
            with self._lock:
                loaded = self._modules.get(key)
                if loaded is not None:
                    self.stats["memory_hits"] += 1
                    return loaded
            loaded = self._compile_or_deserialize(path, unknown_imports_trap)
            with self._lock:
                self._modules[key] = loaded
                self._loading.pop(key, None)
            return loaded

    def _compile_or_deserialize(self, path: Path, unknown_imports_trap: bool) -> _Loaded:
        data, digest = self._wasm_bytes(path)
        cached = self._cache_file(digest)
        module = None
        if cached.is_file():
            try:
                module = Module.deserialize_file(self._engine, str(cached))
                counter = "deserialized"
            except WasmtimeError:
                module = None  # stale or corrupt: compile again and replace it
        if module is None:
            module = Module(self._engine, data)
            counter = "compiled"
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(module.serialize())
                os.replace(tmp, cached)
            except OSError:
                Path(tmp).unlink(missing_ok=True)  # the cache is an optimisation
        linker = Linker(self._engine)  # per module: a shared linker must not be mutated concurrently
        linker.allow_shadowing = True
        linker.define_wasi()
        # A FuncType binds to the first engine it is used with: make one per linker.
        poll_type = FuncType([ValType.i32()] * 4, [ValType.i32()])
        linker.define_func(WASI, "poll_oneoff", poll_type, _poll_oneoff, access_caller=True)
        if unknown_imports_trap:
            linker.define_unknown_imports_as_traps(module)
        pre = linker.instantiate_pre(module)
        with self._lock:
            self.stats[counter] += 1
        return _Loaded(module, pre, digest)

    # -- running -------------------------------------------------------------------------------

    def run(self, spec: ConnectorSpec, payload: dict[str, Any], limits: Limits) -> Result:
        if spec.kind != "wasm":
            raise ValueError(f"WasmSandbox runs wasm connectors, not {spec.kind!r}")
        stdin = json.dumps(payload, separators=(",", ":")).encode()
        outcome = self.execute(spec.target, stdin, limits)
        return outcome_to_result(outcome, limits)

    def execute(
        self,
        target: str | os.PathLike[str],
        stdin: bytes,
        limits: Limits,
        *,
        program: str = "connector",
        argv: Sequence[str] = (),
        preopens: Sequence[tuple[str, str]] = (),
        entry: str = "_start",
        unknown_imports_trap: bool = False,
    ) -> WasmOutcome:
        """Run a module once and return what it did; never raises for the guest's behaviour.

        ``preopens`` are read-only ``(host_dir, guest_dir)`` pairs (none for connectors; the
        code connector's stdlib). ``entry`` is the export to call (``_start`` for commands; for a
        reactor, ``_initialize`` runs first when exported).
        """
        with self._idle:
            if self._closed.is_set():
                raise RuntimeError("WasmSandbox is closed")
            self._active += 1
        try:
            return self._execute(target, stdin, limits, program, argv, preopens, entry, unknown_imports_trap)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _execute(
        self,
        target: str | os.PathLike[str],
        stdin: bytes,
        limits: Limits,
        program: str,
        argv: Sequence[str],
        preopens: Sequence[tuple[str, str]],
        entry: str,
        unknown_imports_trap: bool,
    ) -> WasmOutcome:
        started = time.perf_counter()
        try:
            loaded = self._load(Path(target), unknown_imports_trap)
        except (OSError, WasmtimeError, UnicodeDecodeError) as e:
            return WasmOutcome(b"", b"", False, failure="crashed", message=f"cannot load module: {_first_line(e)}")
        run = _Run(deadline=started + limits.timeout_seconds, origin_ns=0, max_output=limits.max_output_bytes)
        memory_limit = limits.memory_mb << 20
        store = Store(self._engine)
        store.set_limits(memory_size=memory_limit)
        self._set_deadline(store, limits.timeout_seconds)
        stdin_fd = os.memfd_create("wasm-stdin", os.MFD_CLOEXEC)
        instance = None
        outcome = WasmOutcome(b"", b"", False)
        _current.run = run
        try:
            view = memoryview(stdin)
            while view:
                view = view[os.write(stdin_fd, view) :]
            wasi = WasiConfig()
            run.origin_ns = time.perf_counter_ns()  # wasmtime's guest monotonic clock starts here
            wasi.argv = [program, *argv]
            wasi.stdin_file = f"/proc/self/fd/{stdin_fd}"
            wasi.stdout_custom = run.write_stdout
            wasi.stderr_custom = run.write_stderr
            for host_dir, guest_dir in preopens:
                wasi.preopen_dir(host_dir, guest_dir, False)
            store.set_wasi(wasi)
            instance = loaded.pre.instantiate(store)
            exports = instance.exports(store)
            if entry != "_start" and "_initialize" in exports:
                exports["_initialize"](store)
            result = exports[entry](store)
            outcome.exit_code = result if isinstance(result, int) else 0
        except ExitTrap as e:
            outcome.exit_code = e.code
        except Trap as e:
            outcome.failure, outcome.message = _classify_trap(e)
        except WasmtimeError as e:
            message = _first_line(e)
            outcome.failure = "memory" if "exceeds memory limits" in message else "crashed"
            outcome.message = message
        except KeyError:
            outcome.failure, outcome.message = "crashed", f"module exports no {entry!r} function"
        except Exception as e:  # never raise for a guest: anything else is a crash too
            outcome.failure, outcome.message = "crashed", f"{type(e).__name__}: {_first_line(e)}"
        finally:
            _current.run = None
            os.close(stdin_fd)
        if run.cut_short and outcome.failure is None:
            outcome.failure, outcome.message = "timeout", "interrupted"
        # A failing memory.grow only returns -1 to the guest, and wasmtime does not tell the host:
        # a guest that then dies with its memory near the limit (within 1/8) ran out of memory.
        died = outcome.failure == "crashed" or outcome.exit_code not in (None, 0)
        if died and instance is not None and _memory_full(store, instance, memory_limit):
            outcome.failure = "memory"
        outcome.stdout, outcome.stderr, outcome.overflow = bytes(run.stdout), bytes(run.stderr), run.overflow
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        del store
        return outcome


def _memory_full(store: Store, instance: wasmtime.Instance, limit: int) -> bool:
    try:
        memory = instance.exports(store).get("memory")
        return isinstance(memory, Memory) and memory.data_len(store) + max(PAGE, limit // 8) > limit
    except Exception:
        return False


def _classify_trap(trap: Trap) -> tuple[str, str]:
    code = trap.trap_code
    if code in (TrapCode.INTERRUPT,):
        return "timeout", "interrupted"
    if code == TrapCode.STACK_OVERFLOW:
        return "crashed", "wasm trap: call stack exhausted"
    return "crashed", _first_line(trap)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # wasmtime puts "error while executing at wasm backtrace:" first and the cause last.
    for line in reversed(lines):
        if not line[:1].isdigit() and "backtrace" not in line and not line.startswith("note:"):
            return line[:300]
    return (lines[0] if lines else type(error).__name__)[:300]


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _seconds(t: float) -> str:
    return f"{t:g}"


def _logs(stderr: bytes) -> list[str]:
    lines = stderr.decode(errors="replace").splitlines()
    return [line[:MAX_LOG_LINE] for line in lines[-MAX_LOG_LINES:]]


def outcome_to_result(outcome: WasmOutcome, limits: Limits) -> Result:
    """Read a run's outcome as a connector result (SPEC §4's stdout protocol)."""

    def fail(kind: str, error: str, retryable: bool = False) -> Result:
        return Result(
            ok=False,
            error=error,
            error_kind=kind,
            retryable=retryable,
            duration_ms=outcome.duration_ms,
            logs=_logs(outcome.stderr),
        )

    if outcome.overflow:
        return fail("output_too_large", f"output larger than {_human_bytes(limits.max_output_bytes)}")
    if outcome.failure == "timeout":
        return fail("timeout", f"timed out after {_seconds(limits.timeout_seconds)} s", retryable=True)
    if outcome.failure == "memory":
        return fail("memory", f"exceeded memory limit {limits.memory_mb} MiB")
    if outcome.failure is not None:
        return fail("crashed", outcome.message or "crashed")
    if outcome.exit_code:
        detail = _logs(outcome.stderr)[-1:] or [""]
        suffix = f": {detail[0][:200]}" if detail[0] else ""
        return fail("crashed", f"exited with code {outcome.exit_code}{suffix}")
    try:
        document = json.loads(outcome.stdout)
    except ValueError:
        if not outcome.stdout.strip():
            return fail("bad_output", "connector wrote nothing on stdout")
        return fail("bad_output", "connector output is not JSON")
    if isinstance(document, dict) and "output" in document:
        return Result(ok=True, output=document["output"], duration_ms=outcome.duration_ms, logs=_logs(outcome.stderr))
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        message = error.get("message")
        return fail(
            "connector",
            str(message) if message is not None else "connector failed",
            retryable=error.get("retryable") is True,
        )
    return fail("bad_output", 'connector output is neither {"output": …} nor {"error": {…}}')
