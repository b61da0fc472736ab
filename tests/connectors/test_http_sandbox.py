"""The http connector as the runtime runs it: found in the registry, run in the subprocess sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.plugins import load_registry
from sandbox import Limits
from sandbox.process import ProcessSandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ProcessSandbox]:
    registry = load_registry()
    sb = ProcessSandbox(preload=registry.modules, slots=2, uid_base=61200)
    assert sb.preload_errors == {}
    yield sb
    sb.close()


def payload(config, *allowed: str):
    context = {"run_id": 7, "node_id": "fetch", "attempt": 2, "allowed_private_networks": list(allowed)}
    return {"config": config, "input": None, "context": context}


def test_runs_in_the_sandbox(sandbox, server):
    info = load_registry().get("http@1")
    limits = Limits(network=info.permissions["network"], timeout_seconds=10)
    result = sandbox.run(info.spec, payload({"url": server.url("/echo")}, "127.0.0.0/8"), limits)
    assert result.ok, result.error
    assert result.output["status"] == 200
    sent = result.output["body"]["headers"]
    assert len(sent["idempotency-key"]) == 64  # sha256("7:fetch:2"), derived by the runtime
    assert any("GET http://127.0.0.1" in line for line in result.logs)


def test_refusal_comes_back_as_a_fatal_connector_error(sandbox, server):
    info = load_registry().get("http")
    result = sandbox.run(info.spec, payload({"url": server.url("/echo")}), Limits(network=True))
    assert not result.ok
    assert result.error_kind == "connector" and result.retryable is False
    assert "HOOKHUB_ALLOW_PRIVATE_NETWORKS" in result.error
    assert server.requests == []


def test_retry_after_crosses_the_sandbox(sandbox, server):
    info = load_registry().get("http")
    config = {"url": server.url("/status/429?retry_after=12")}
    result = sandbox.run(info.spec, payload(config, "127.0.0.0/8"), Limits(network=True))
    assert not result.ok and result.retryable is True
    assert result.retry_after == 12
