"""The llm connector against a real local server speaking the OpenAI and Anthropic protocols."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.llm import Llm
from hub.sdk import ConnectorError, RetryableError
from hub.testing import ConfigInvalid, run_connector, run_inline

KEY = "sk-test-123456"


class ModelServer:
    """Answers /v1/chat/completions (OpenAI) and /v1/messages (Anthropic) like the real APIs.

    ``script`` queues (status, body, headers) answers to give before the normal ones; the model
    "answers" with ``reply`` (default: the last user message, reversed).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, Any, dict[str, str]]] = []
        self.reply: str | None = None
        self.delay = 0.0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": headers, "body": body})
                    scripted = outer.script.pop(0) if outer.script else None
                if outer.delay:
                    time.sleep(outer.delay)
                if scripted is not None:
                    return self.send(*scripted)
                if self.path == "/v1/chat/completions":
                    if headers.get("authorization") != f"Bearer {KEY}":
                        return self.send(401, {"error": {"message": "Incorrect API key provided", "type":
                                                         "invalid_request_error", "code": "invalid_api_key"}})
                    text = outer.answer(body["messages"])
                    return self.send(200, {
                        "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
                    })
                if self.path == "/v1/messages":
                    if headers.get("x-api-key") != KEY:
                        return self.send(401, {"type": "error", "error": {"type": "authentication_error",
                                                                          "message": "invalid x-api-key"}})
                    if "max_tokens" not in body or headers.get("anthropic-version") is None:
                        return self.send(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                          "message": "max_tokens: Field required"}})
                    text = outer.answer(body["messages"])
                    return self.send(200, {
                        "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                        "usage": {"input_tokens": 9, "output_tokens": 4},
                    })
                return self.send(404, {"error": {"message": f"no route {self.path}"}})

            def send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
                data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, messages: list[dict[str, Any]]) -> str:
        if self.reply is not None:
            return self.reply
        last = [m for m in messages if m["role"] == "user"][-1]["content"]
        return str(last)[::-1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def model() -> Iterator[ModelServer]:
    server = ModelServer()
    yield server
    server.close()


def openai(model: ModelServer, **config: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": f"{model.url}/v1", "api_key": KEY, "model": "gpt-test", **config}


def anthropic(model: ModelServer, **config: Any) -> dict[str, Any]:
    return {"provider": "anthropic", "base_url": model.url, "api_key": KEY, "model": "claude-test", **config}


def test_openai_prompt_system_and_usage(model):
    out = run_inline(Llm, openai(model, prompt="hello", system="be brief", temperature=0.2, max_tokens=50))
    assert out["text"] == "olleh"
    assert out["json"] is None
    assert out["usage"] == {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16}
    assert out["finish_reason"] == "stop" and out["model"] == "gpt-test"
    [seen] = model.requests
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert seen["body"]["temperature"] == 0.2 and seen["body"]["max_tokens"] == 50
    assert len(seen["headers"]["idempotency-key"]) == 64


def test_anthropic_messages_system_apart_and_default_max_tokens(model):
    messages = [{"role": "system", "content": "sys two"}, {"role": "user", "content": "abc"},
                {"role": "assistant", "content": "cba"}, {"role": "user", "content": "xyz"}]
    out = run_inline(Llm, anthropic(model, messages=messages, system="sys one"))
    assert out["text"] == "zyx"
    assert out["usage"] == {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
    [seen] = model.requests
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["body"]["system"] == "sys one\n\nsys two"
    assert [m["role"] for m in seen["body"]["messages"]] == ["user", "assistant", "user"]
    assert seen["body"]["max_tokens"] == 1024


@pytest.mark.parametrize("provider", [openai, anthropic])
def test_json_mode_parses_the_answer(model, provider):
    model.reply = '```json\n{"sentiment": "positive", "score": 0.9}\n```'
    out = run_inline(Llm, provider(model, prompt="rate this", json=True))
    assert out["json"] == {"sentiment": "positive", "score": 0.9}
    body = model.requests[0]["body"]
    if provider is openai:
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert "JSON" in body["system"]


def test_json_mode_with_prose_is_retryable(model):
    model.reply = "Sure! Here is the JSON you asked for"
    with pytest.raises(RetryableError, match="not JSON"):
        run_inline(Llm, openai(model, prompt="x", json=True))


@pytest.mark.parametrize("provider", [openai, anthropic])
def test_bad_credentials_are_a_clear_fatal_error(model, provider):
    with pytest.raises(ConnectorError) as info:
        run_inline(Llm, provider(model, prompt="x", api_key="sk-wrong"))
    assert not info.value.retryable
    assert "refused the credentials (401" in info.value.message and "check api_key" in info.value.message
    assert "sk-wrong" not in info.value.message


@pytest.mark.parametrize("status", [429, 500, 503, 529])
def test_rate_limits_and_server_errors_are_retryable_with_retry_after(model, status):
    model.script = [(status, {"error": {"message": "slow down", "type": "rate_limit_error"}}, {"Retry-After": "7"})]
    with pytest.raises(RetryableError) as info:
        run_inline(Llm, anthropic(model, prompt="x"))
    assert info.value.retry_after == 7
    assert f"answered {status}: rate_limit_error: slow down" in info.value.message


def test_openai_retry_after_ms(model):
    model.script = [(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "1500"})]
    with pytest.raises(RetryableError) as info:
        run_inline(Llm, openai(model, prompt="x"))
    assert info.value.retry_after == 1.5


def test_other_client_errors_are_fatal_with_the_servers_message(model):
    model.script = [(400, {"error": {"message": "model 'nope' not found", "type": "invalid_request_error"}}, {})]
    with pytest.raises(ConnectorError, match="answered 400: invalid_request_error: model 'nope' not found") as info:
        run_inline(Llm, openai(model, prompt="x"))
    assert not info.value.retryable


def test_timeout_is_retryable(model):
    model.delay = 2
    with pytest.raises(RetryableError, match="timed out after 0.5 s"):
        run_inline(Llm, openai(model, prompt="x", timeout_seconds=0.5))


def test_private_address_refused_without_the_operators_allowance(model):
    with pytest.raises(ConnectorError, match="HOOKHUB_ALLOW_PRIVATE_NETWORKS") as info:
        run_inline(Llm, openai(model, prompt="x"), allowed_private_networks=())
    assert not info.value.retryable
    assert model.requests == []


def test_exactly_one_of_prompt_or_messages():
    with pytest.raises(ConfigInvalid, match="Exactly one of prompt or messages"):
        run_inline(Llm, {"model": "m"})
    with pytest.raises(ConfigInvalid, match="Exactly one of prompt or messages"):
        run_inline(Llm, {"model": "m", "prompt": "a", "messages": [{"role": "user", "content": "b"}]})


def test_5xx_then_success_through_the_runtime(hub, model):
    """A real flow: the first attempt gets a 503 with Retry-After, the retry succeeds."""
    from hub.db import write_transaction
    from hub.models import Flow, FlowVersion, NodeRun, Run, RunEvent, Workspace
    from hub.runtime import create_run, execute_node

    model.script = [(503, {"error": {"message": "overloaded"}}, {"Retry-After": "0"})]
    doc = {"name": "ask", "nodes": [{"id": "ask", "connector": "llm",
                                     "retry": {"max_attempts": 2, "backoff_seconds": 0},
                                     "config": openai(model, prompt="{{ trigger.body.q }}")}]}
    with write_transaction():
        ws = Workspace.create(name="w")
        flow = Flow.create(workspace=ws, name="ask")
        fv = FlowVersion.create(flow=flow, version=1, document=doc)
        run, _ = create_run(fv, {"body": {"q": "ping"}}, workspace_id=ws.id)
    execute_node(run.id, "ask", hub.runtime)
    node = NodeRun.get((NodeRun.run == run.id) & (NodeRun.node_id == "ask"))
    assert node.status == "retrying" and node.error["retryable"] and "503" in node.error["message"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        execute_node(run.id, "ask", hub.runtime)
        node = NodeRun.get_by_id(node.id)
        if node.status != "retrying":
            break
        time.sleep(0.1)
    assert node.status == "succeeded", node.error
    assert node.output["text"] == "gnip"
    assert Run.get_by_id(run.id).status == "succeeded"
    logs = [e.data["line"] for e in RunEvent.select().where(RunEvent.run == run.id, RunEvent.type == "node.log")]
    assert any("-> 200" in line for line in logs)


def test_in_the_subprocess_sandbox(model):
    result = run_connector("llm", anthropic(model, prompt="sandbox"))
    assert result.ok, result.error
    assert result.output["text"] == "xobdnas"
