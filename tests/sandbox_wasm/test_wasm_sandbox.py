from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable

import pytest

from sandbox import ConnectorSpec, Limits, Result
from sandbox.wasm import WasmSandbox

from .conftest import ECHO, stdout_of

PAYLOAD = {"config": {}, "input": {"name": "Ada", "tags": ["a", "b}"], "n": 3.5}, "context": {"run_id": "r1"}}
Wat = Callable[..., ConnectorSpec]


def print_static(text: bytes) -> str:
    return f"(drop (call $print (i32.const 1024) (i32.const {len(text)})))"


# -- the C example -------------------------------------------------------------------------------


def test_echo_round_trip(sandbox: WasmSandbox, echo: ConnectorSpec) -> None:
    result = sandbox.run(echo, PAYLOAD, Limits())
    assert result == Result(ok=True, output=PAYLOAD["input"], duration_ms=result.duration_ms, logs=[])


def test_echo_connector_error(sandbox: WasmSandbox, echo: ConnectorSpec) -> None:
    result = sandbox.run(echo, {**PAYLOAD, "config": {"fail": True}}, Limits())
    assert (result.ok, result.error_kind, result.error, result.retryable) == (
        False,
        "connector",
        "asked to fail",
        True,
    )


def test_guest_error_not_retryable(sandbox: WasmSandbox, wat: Wat) -> None:
    out = stdout_of({"error": {"message": "no such customer"}})
    result = sandbox.run(wat(print_static(out), data=out), PAYLOAD, Limits())
    assert (result.ok, result.error_kind, result.error, result.retryable) == (
        False,
        "connector",
        "no such customer",
        False,
    )


# -- hostile guests ------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.3, 1.0])
def test_infinite_loop_stopped_at_deadline(sandbox: WasmSandbox, wat: Wat, timeout: float) -> None:
    spec = wat("(loop (br 0))")
    sandbox.load(spec.target)
    started = time.perf_counter()
    result = sandbox.run(spec, PAYLOAD, Limits(timeout_seconds=timeout))
    elapsed = time.perf_counter() - started
    assert (result.ok, result.error_kind, result.retryable) == (False, "timeout", True)
    assert result.error == f"timed out after {timeout:g} s"
    assert timeout <= elapsed < timeout + 0.5


def sleep_subscription(seconds: float) -> bytes:
    # subscription_t: userdata, tag=clock, clock id=monotonic, timeout ns, precision, flags=relative
    return struct.pack("<QB7xIxxxxQQH6x", 7, 0, 1, int(seconds * 1e9), 0, 0)


def test_sleeping_guest_stopped_at_deadline(sandbox: WasmSandbox, wat: Wat) -> None:
    # sleep(60) in a loop, through poll_oneoff
    body = "(loop (drop (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 2100))) (br 0))"
    spec = wat(body, data=sleep_subscription(60))
    sandbox.load(spec.target)
    started = time.perf_counter()
    result = sandbox.run(spec, PAYLOAD, Limits(timeout_seconds=0.5))
    elapsed = time.perf_counter() - started
    assert (result.error_kind, result.error) == ("timeout", "timed out after 0.5 s")
    assert 0.5 <= elapsed < 1.0


def test_short_sleep_completes(sandbox: WasmSandbox, wat: Wat) -> None:
    out = stdout_of({"output": "rested"})
    sub = sleep_subscription(0.05)
    body = (
        f"(drop (call $poll (i32.const {1024 + len(out)}) (i32.const 2048) (i32.const 1) (i32.const 2100)))"
        + print_static(out)
    )
    started = time.perf_counter()
    result = sandbox.run(wat(body, data=out + sub), PAYLOAD, Limits(timeout_seconds=5))
    assert result.ok and result.output == "rested"
    assert time.perf_counter() - started >= 0.05


def test_sleep_cut_short_at_the_deadline_is_a_timeout_even_if_the_guest_then_answers(
        sandbox: WasmSandbox, wat: Wat) -> None:
    # one sleep(60), then an answer and a clean exit at once: the guest is done before the epoch trap
    out = stdout_of({"output": "rested"})
    body = (
        f"(drop (call $poll (i32.const {1024 + len(out)}) (i32.const 2048) (i32.const 1) (i32.const 2100)))"
        + print_static(out)
    )
    result = sandbox.run(wat(body, data=out + sleep_subscription(60)), PAYLOAD, Limits(timeout_seconds=0.3))
    assert (result.ok, result.error_kind, result.error) == (False, "timeout", "timed out after 0.3 s")


def test_memory_hog(sandbox: WasmSandbox, wat: Wat) -> None:
    # grow 1 MiB at a time until memory.grow fails, then die
    body = "(loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable"
    result = sandbox.run(wat(body), PAYLOAD, Limits(memory_mb=16))
    assert (result.ok, result.error_kind, result.error) == (False, "memory", "exceeded memory limit 16 MiB")


def test_initial_memory_over_limit(sandbox: WasmSandbox, wat: Wat) -> None:
    result = sandbox.run(wat("nop", memory_pages=512), PAYLOAD, Limits(memory_mb=16))
    assert (result.error_kind, result.error) == ("memory", "exceeded memory limit 16 MiB")


def test_huge_stdout_stops_at_first_refused_write(sandbox: WasmSandbox, wat: Wat) -> None:
    # write 64 KiB chunks while the writes succeed
    body = "(loop (br_if 0 (i32.eqz (call $print (i32.const 0) (i32.const 65536)))))"
    result = sandbox.run(wat(body), PAYLOAD, Limits())
    assert (result.ok, result.error_kind, result.error) == (
        False,
        "output_too_large",
        "output larger than 1 MiB",
    )


def test_huge_stdout_ignoring_errors(sandbox: WasmSandbox, wat: Wat) -> None:
    body = "(loop (drop (call $print (i32.const 0) (i32.const 65536))) (br 0))"
    result = sandbox.run(wat(body), PAYLOAD, Limits(timeout_seconds=0.3, max_output_bytes=1000))
    assert (result.error_kind, result.error) == ("output_too_large", "output larger than 1000 bytes")


@pytest.mark.parametrize("text", [b"not json", b'{"output": 1', b"[1, 2]", b'{"result": 1}', b""])
def test_bad_output(sandbox: WasmSandbox, wat: Wat, text: bytes) -> None:
    result = sandbox.run(wat(print_static(text), data=text), PAYLOAD, Limits())
    assert (result.ok, result.error_kind) == (False, "bad_output")


def test_exit_code(sandbox: WasmSandbox, wat: Wat) -> None:
    result = sandbox.run(wat("(call $exit (i32.const 3))"), PAYLOAD, Limits())
    assert (result.ok, result.error_kind, result.error) == (False, "crashed", "exited with code 3")


def test_exit_zero_after_output(sandbox: WasmSandbox, wat: Wat) -> None:
    out = stdout_of({"output": [1, 2]})
    result = sandbox.run(wat(print_static(out) + "(call $exit (i32.const 0))", data=out), PAYLOAD, Limits())
    assert result.ok and result.output == [1, 2]


def test_trap_is_crash(sandbox: WasmSandbox, wat: Wat) -> None:
    result = sandbox.run(wat("(drop (i32.div_u (i32.const 1) (i32.const 0)))"), PAYLOAD, Limits())
    assert result.error_kind == "crashed"
    assert "divide by zero" in (result.error or "")


def test_stack_overflow_is_crash(sandbox: WasmSandbox, tmp_path) -> None:
    path = tmp_path / "recurse.wat"
    path.write_text('(module (memory (export "memory") 1) (func $f (export "_start") (call $f)))')
    result = sandbox.run(ConnectorSpec("wasm", str(path)), PAYLOAD, Limits())
    assert (result.error_kind, result.error) == ("crashed", "wasm trap: call stack exhausted")


def test_no_preopened_dir(sandbox: WasmSandbox, wat: Wat) -> None:
    # path_open("/etc/passwd") relative to fd 3, the first preopen a host could grant
    path = b"etc/passwd"
    opened = stdout_of({"output": "opened"})
    denied = stdout_of({"output": "denied"})
    data = path + opened + denied
    body = f"""
      (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const {len(path)})
                     (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 3000)))
        (then (drop (call $print (i32.const {1024 + len(path)}) (i32.const {len(opened)}))))
        (else (drop (call $print (i32.const {1024 + len(path) + len(opened)}) (i32.const {len(denied)})))))"""
    result = sandbox.run(wat(body, data=data), PAYLOAD, Limits())
    assert result.ok and result.output == "denied"


def test_missing_or_invalid_module(sandbox: WasmSandbox, tmp_path) -> None:
    missing = sandbox.run(ConnectorSpec("wasm", str(tmp_path / "nope.wasm")), PAYLOAD, Limits())
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm garbage")
    invalid = sandbox.run(ConnectorSpec("wasm", str(bad)), PAYLOAD, Limits())
    for result in (missing, invalid):
        assert result.error_kind == "crashed"
        assert (result.error or "").startswith("cannot load module")


def test_stderr_becomes_logs(sandbox: WasmSandbox, tmp_path) -> None:
    path = tmp_path / "log.wat"
    path.write_text("""(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "\\10\\00\\00\\00\\0b\\00\\00\\00")
      (data (i32.const 16) "one\\ntwo\\nout")
      (func (export "_start")
        (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))))""")
    result = sandbox.run(ConnectorSpec("wasm", str(path)), PAYLOAD, Limits())
    assert result.error_kind == "bad_output"
    assert result.logs == ["one", "two", "out"]


# -- caching and concurrency ---------------------------------------------------------------------


def test_disk_cache_shared_between_sandboxes(tmp_path) -> None:
    with WasmSandbox(tmp_path) as first:
        assert first.run(ConnectorSpec("wasm", str(ECHO)), PAYLOAD, Limits()).ok
        assert first.stats == {"compiled": 1, "deserialized": 0, "memory_hits": 0}
    cached = list(tmp_path.glob("*.cwasm"))
    assert len(cached) == 1
    with WasmSandbox(tmp_path) as second:
        for _ in range(2):
            assert second.run(ConnectorSpec("wasm", str(ECHO)), PAYLOAD, Limits()).ok
        assert second.stats == {"compiled": 0, "deserialized": 1, "memory_hits": 1}


def test_corrupt_cache_file_is_recompiled(tmp_path) -> None:
    with WasmSandbox(tmp_path) as first:
        first.load(ECHO)
    (cached,) = tmp_path.glob("*.cwasm")
    cached.write_bytes(b"not a module")
    with WasmSandbox(tmp_path) as second:
        assert second.run(ConnectorSpec("wasm", str(ECHO)), PAYLOAD, Limits()).ok
        assert second.stats["compiled"] == 1


def test_concurrent_runs(sandbox: WasmSandbox, echo: ConnectorSpec, wat: Wat) -> None:
    loop = wat("(loop (br 0))")
    results: dict[int, list[Result]] = {}

    def work(n: int) -> None:
        mine = results.setdefault(n, [])
        for i in range(20):
            mine.append(sandbox.run(echo, {**PAYLOAD, "input": [n, i]}, Limits()))
        mine.append(sandbox.run(loop, PAYLOAD, Limits(timeout_seconds=0.2)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == list(range(8))
    for n, mine in results.items():
        assert [r.output for r in mine[:-1]] == [[n, i] for i in range(20)]
        assert mine[-1].error_kind == "timeout"


def test_cached_run_is_fast(sandbox: WasmSandbox, echo: ConnectorSpec) -> None:
    sandbox.run(echo, PAYLOAD, Limits())
    best = min(sandbox.run(echo, PAYLOAD, Limits()).duration_ms for _ in range(20))
    assert best < 5  # about 0.5 ms here; generous for a loaded CI machine


def test_closed_sandbox_refuses(tmp_path) -> None:
    sb = WasmSandbox(tmp_path)
    sb.close()
    with pytest.raises(RuntimeError):
        sb.run(ConnectorSpec("wasm", str(ECHO)), PAYLOAD, Limits())


def test_close_lets_runs_in_flight_finish(tmp_path, wat: Wat) -> None:
    sb = WasmSandbox(tmp_path)
    spec = wat("(loop (br 0))")
    sb.load(spec.target)
    results: list[Result] = []
    worker = threading.Thread(target=lambda: results.append(sb.run(spec, PAYLOAD, Limits(timeout_seconds=0.3))))
    worker.start()
    time.sleep(0.05)
    sb.close()  # returns once the loop hit its deadline
    worker.join(timeout=5)
    assert [r.error_kind for r in results] == ["timeout"]
