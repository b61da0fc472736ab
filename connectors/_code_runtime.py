"""The WASM sandbox the hub runs: plain WASI connector modules, plus the ``code`` connector.

The runtime runs every attempt as ``sandbox_for(spec.kind).run(spec, payload, limits)``. The
``code`` connector registers as a WASM connector whose module is the marker
:data:`CODE_MODULE`; :class:`HubWasmSandbox` recognises it and runs the node's snippet with CPython
for WASI (:func:`sandbox.wasm_python.run_python`) — same sandbox, same deadline, memory limit and
output cap as any WASM module. Every other spec goes to :class:`sandbox.wasm.WasmSandbox` unchanged.

CPython for WASI is a 100 MB module whose first compile takes about a minute and 2.5 GB of RAM (then
it is cached on disk). :meth:`HubWasmSandbox.prepare_python` does it with progress messages; ``hookhub
connectors warm`` runs it at deploy time. If a run finds it not yet compiled, the compile starts in
the background and the run waits at most its own timeout: past that the attempt fails as retryable
with a ``retry_after`` instead of holding its lease for a minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sandbox import ConnectorSpec, Limits, Result
from sandbox.wasm import WasmSandbox

__all__ = ["CODE_MODULE", "HubWasmSandbox"]

#: the ``wasm_module`` of the code connector: not a file, a name this sandbox knows
CODE_MODULE = "hookhub:wasm-python"
COMPILE_RETRY_AFTER = 30.0

log = logging.getLogger("hookhub.code")


class HubWasmSandbox(WasmSandbox):
    """:class:`~sandbox.wasm.WasmSandbox` that also runs the ``code`` connector's snippets."""

    def __init__(self, cache_dir: Any) -> None:
        super().__init__(cache_dir)
        self._python_ready = threading.Event()
        self._python_failed: str | None = None
        self._python_lock = threading.Lock()
        self._python_thread: threading.Thread | None = None

    def run(self, spec: ConnectorSpec, payload: dict[str, Any], limits: Limits) -> Result:
        if spec.kind == "wasm" and spec.target == CODE_MODULE:
            return self._run_code(payload, limits)
        return super().run(spec, payload, limits)

    # -- CPython for WASI ------------------------------------------------------------------------

    def prepare_python(self, progress: Callable[[str], object] | None = None) -> None:
        """Compile (or load from the disk cache) CPython for WASI now; blocks until done.

        :raises sandbox.wasm_python.PythonRuntimeMissing: the ``code`` extra is not installed.
        """
        from sandbox.wasm_python import warm_cache

        if self._python_ready.is_set():
            return
        with self._python_lock:
            if self._python_ready.is_set():
                return
            warm_cache(self, progress=progress or (lambda message: log.warning("code connector: %s", message)))
            self._python_ready.set()

    def _prepare_in_background(self) -> None:
        with self._python_lock:
            if self._python_thread is not None and (self._python_thread.is_alive() or self._python_ready.is_set()):
                return
            self._python_failed = None

            def work() -> None:
                try:
                    self.prepare_python()
                except Exception as exc:  # reported to the attempts that wait for it
                    log.exception("code connector: preparing CPython for WASI failed")
                    self._python_failed = f"{type(exc).__name__}: {exc}"

            self._python_thread = threading.Thread(target=work, name="wasm-python-compile", daemon=True)
            self._python_thread.start()

    def _run_code(self, payload: dict[str, Any], limits: Limits) -> Result:
        from sandbox.wasm_python import PythonRuntimeMissing, python_module_path, run_python

        config = payload.get("config") or {}
        code = config.get("code")
        if not isinstance(code, str):
            return Result(ok=False, error="code: the `code` option must be Python source text", error_kind="config")
        node_input = config["input"] if "input" in config else payload.get("input")
        try:
            python_module_path()
        except PythonRuntimeMissing as exc:
            return Result(ok=False, error=str(exc), error_kind="sandbox")
        if not self._python_ready.is_set():
            self._prepare_in_background()
            thread = self._python_thread
            if thread is not None:
                thread.join(limits.timeout_seconds)
            if self._python_failed:
                return Result(ok=False, error=f"code: cannot prepare CPython for WASI: {self._python_failed}",
                              error_kind="sandbox", retryable=True, retry_after=COMPILE_RETRY_AFTER)
            if not self._python_ready.is_set():
                return Result(
                    ok=False,
                    error="code: CPython for WASI is still being compiled on this worker (once per install, "
                    "about a minute); run `hookhub connectors warm` at deploy time to avoid this",
                    error_kind="sandbox",
                    retryable=True,
                    retry_after=COMPILE_RETRY_AFTER,
                )
        return run_python(self, code, node_input, limits)
