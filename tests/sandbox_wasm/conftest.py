from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import ConnectorSpec
from sandbox.wasm import WasmSandbox

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "examples" / "wasm-echo" / "echo.wasm"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmSandbox]:
    with WasmSandbox(tmp_path_factory.mktemp("wasm-cache")) as sb:
        yield sb


@pytest.fixture
def echo() -> ConnectorSpec:
    return ConnectorSpec(kind="wasm", target=str(ECHO))


def _data(text: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in text)


def guest(body: str, *, data: bytes = b"", memory_pages: int = 1) -> str:
    """A WAT command module: `body` is the `_start` function's code.

    Helpers in scope: `$print` (ptr, len) writes to stdout (returns the errno), `$exit` (code).
    `data` is placed at offset 1024.
    """
    return f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") {memory_pages})
  (data (i32.const 1024) "{_data(data)}")
  (func $print (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func (export "_start") {body}))"""


def stdout_of(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.fixture
def wat(tmp_path: Path) -> Callable[..., ConnectorSpec]:
    """Write a guest module built with `guest()` and return its spec."""
    counter = iter(range(1000))

    def make(body: str, **kw: object) -> ConnectorSpec:
        path = tmp_path / f"guest{next(counter)}.wat"
        path.write_text(guest(body, **kw))  # type: ignore[arg-type]
        return ConnectorSpec(kind="wasm", target=str(path))

    return make
