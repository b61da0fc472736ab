"""The ``transform`` connector's WASI module (connectors/transform.wat), run in the real WASM sandbox."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.transform import MODULE, Transform
from hub.plugins import get_registry
from sandbox import ConnectorSpec, Limits
from sandbox.wasm import WasmSandbox

SPEC = ConnectorSpec("wasm", str(MODULE))
CONTEXT = {"run_id": 7, "node_id": "t", "attempt": 1, "idempotency_key": "k" * 64,
           "allowed_private_networks": []}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    with WasmSandbox(tmp_path_factory.mktemp("wasm-cache")) as box:
        yield box


def test_registered_as_a_wasm_connector() -> None:
    info = get_registry().get("transform")
    assert info is not None and info.spec == SPEC and Transform.sandbox == "wasm"


@settings(max_examples=150, deadline=None)
@given(value=json_values, node_input=json_values)
def test_output_is_the_rendered_value(sandbox: WasmSandbox, value, node_input) -> None:
    result = sandbox.run(SPEC, {"config": {"value": value}, "input": node_input, "context": CONTEXT}, Limits())
    assert result.ok, result.error
    # json.loads reads back what the hub wrote: floats as the same floats, text as the same text
    assert json.dumps(result.output, sort_keys=True) == json.dumps(value, sort_keys=True)


def test_value_found_wherever_it_is_in_the_document(sandbox: WasmSandbox) -> None:
    doc = b'{ "input" : {"value": "decoy", "config": 1} ,"context":{},\n "config" : { "other" : "x\\"}" ,' \
          b' "value" : [1, {"a": "]"}, -2.5e3, true] } }'
    out = sandbox.execute(SPEC.target, doc, Limits())
    assert out.exit_code == 0
    assert json.loads(out.stdout) == {"output": [1, {"a": "]"}, -2500.0, True]}


@pytest.mark.parametrize("stdin", [b"", b"[1, 2]", b"42", b'{"config": {"value": ', b'{"config": {"value": "open}}'])
def test_a_payload_that_is_not_an_object_is_a_clear_error(sandbox: WasmSandbox, stdin: bytes) -> None:
    out = sandbox.execute(SPEC.target, stdin, Limits())
    assert out.exit_code == 0
    assert json.loads(out.stdout) == {"error": {"message": "transform: the payload is not a JSON object",
                                                 "retryable": False}}


def test_no_value_answers_null(sandbox: WasmSandbox) -> None:
    result = sandbox.run(SPEC, {"config": {}, "input": 1, "context": CONTEXT}, Limits())
    assert result.ok and result.output is None


def test_limits_hold(sandbox: WasmSandbox) -> None:
    big = "x" * (3 << 20)
    too_long = sandbox.run(SPEC, {"config": {"value": big}, "context": CONTEXT}, Limits())
    assert (too_long.ok, too_long.error_kind) == (False, "output_too_large")
    no_room = sandbox.run(SPEC, {"config": {"value": big}, "context": CONTEXT},
                          Limits(memory_mb=2, max_output_bytes=8 << 20))
    assert (no_room.ok, no_room.error_kind) == (False, "memory")
    fits = sandbox.run(SPEC, {"config": {"value": big[:900_000]}, "context": CONTEXT}, Limits())
    assert fits.ok and len(fits.output) == 900_000


def test_floats_and_unicode_round_trip(sandbox: WasmSandbox) -> None:
    value = {"pi": math.pi, "tiny": 5e-324, "text": "ü✓ \u2028 \\ \" \n", "big": 2**70}
    result = sandbox.run(SPEC, {"config": {"value": value}, "context": CONTEXT}, Limits())
    assert result.ok and result.output == value
