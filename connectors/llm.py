"""The built-in ``llm`` connector: one chat completion per attempt.

Two wire protocols cover the servers people run:

- ``provider: openai`` — ``POST {base_url}/chat/completions``: OpenAI, and the OpenAI-compatible
  servers of Ollama (``http://host:11434/v1``), vLLM, llama.cpp, LM Studio, OpenRouter, …;
- ``provider: anthropic`` — ``POST {base_url}/v1/messages`` (Anthropic's Messages API).

Requests go through the ``http`` connector's guarded session (``connectors._net``), so the same
private-network policy applies: a model server on localhost or the LAN must be allowed by the
operator (``HOOKHUB_ALLOW_PRIVATE_NETWORKS``). Failures are classified like ``http``'s: 408, 429,
5xx (and Anthropic's 529 "overloaded"), timeouts and dropped connections are retryable, with the
server's ``Retry-After`` handed to the node's retry policy; 401/403 are a fatal "check api_key";
other 4xx are fatal with the server's own error message.

``json: true`` asks for a JSON answer (OpenAI's ``response_format: json_object``; for Anthropic an
instruction in the system prompt) and parses it into ``output.json``; an answer that is not JSON
is a retryable error (a model may well get it right the next time).
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from connectors._net import GuardError, guarded_session, refusal
from connectors.http import _classify, _excerpt, _http_url, _read_capped, _redact, _retry_after
from hub.sdk import Connector, ConnectorError, Context, RetryableError, hookimpl

__all__ = ["Llm", "hookhub_connectors"]

DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
ANTHROPIC_VERSION = "2023-06-01"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
JSON_INSTRUCTION = "Respond with a single JSON value only: no prose, no code fences."
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S | re.I)


class MessageSchema(Schema):
    class Meta:
        unknown = "raise"

    role = fields.String(required=True, validate=validate.OneOf(["system", "user", "assistant"]))
    content = fields.Raw(
        required=True, metadata={"description": "Text, or the provider's list of content blocks."}
    )


class Llm(Connector):
    """Ask a chat model (OpenAI-compatible or Anthropic)."""

    name = "llm"
    version = "1.0.0"
    description = "Chat completion from an OpenAI-compatible or Anthropic API; output {text, json, usage}."
    permissions = {"network": True}

    class Config(Connector.Config):
        provider = fields.String(load_default="openai", validate=validate.OneOf(["openai", "anthropic"]))
        base_url = fields.String(
            validate=_http_url,
            metadata={"description": "Default https://api.openai.com/v1 or https://api.anthropic.com."},
        )
        api_key = fields.String(metadata={"description": "Usually {{ secrets.OPENAI_API_KEY }}."})
        model = fields.String(required=True, validate=validate.Length(min=1))
        system = fields.String()
        prompt = fields.String(metadata={"description": "One user message. Exactly one of prompt/messages."})
        messages = fields.List(fields.Nested(MessageSchema), validate=validate.Length(min=1))
        temperature = fields.Float(validate=validate.Range(min=0, max=2))
        max_tokens = fields.Integer(
            validate=validate.Range(min=1), metadata={"description": "Anthropic requires it: default 1024."}
        )
        json = fields.Boolean(load_default=False, metadata={"description": "Ask for JSON and parse it."})
        options = fields.Dict(
            keys=fields.String(),
            load_default=dict,
            metadata={"description": "More request fields (top_p, stop, seed, …), passed as they are."},
        )
        headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
        verify_tls = fields.Boolean(load_default=True)
        timeout_seconds = fields.Float(
            load_default=120.0, validate=validate.Range(min=0, max=600, min_inclusive=False)
        )

        @validates_schema
        def _one_prompt(self, data: dict[str, Any], **_: Any) -> None:
            given = [k for k in ("prompt", "messages") if k in data]
            if len(given) != 1:
                message = "Exactly one of prompt or messages is required."
                raise ValidationError({k: [message] for k in (given or ["prompt", "messages"])})

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        cfg = config  # validated and loaded (defaults filled in) by the sandbox
        provider = cfg["provider"]
        base = (cfg.get("base_url") or DEFAULT_BASE_URLS[provider]).rstrip("/")
        if provider == "openai":
            url, headers, body = f"{base}/chat/completions", _openai_headers(cfg), _openai_body(cfg)
        else:
            url, headers, body = f"{base}/v1/messages", _anthropic_headers(cfg), _anthropic_body(cfg)
        headers.update(cfg["headers"])
        headers.setdefault("Idempotency-Key", ctx.idempotency_key)
        answer = _post(url, headers, body, cfg["timeout_seconds"], cfg["verify_tls"], ctx)
        out = _openai_output(answer) if provider == "openai" else _anthropic_output(answer)
        out["json"] = _parse_json(out["text"]) if cfg["json"] else None
        usage = out["usage"]
        ctx.log.info("%s %s: %s in / %s out tokens", provider, cfg["model"], usage.get("input_tokens"),
                     usage.get("output_tokens"))
        return out


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Llm]


# --- providers -------------------------------------------------------------------------------


def _messages(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    if "prompt" in cfg:
        return [{"role": "user", "content": cfg["prompt"]}]
    return [dict(m) for m in cfg["messages"]]


def _openai_headers(cfg: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "hookhub-llm/1.0"}
    if cfg.get("api_key"):
        headers["Authorization"] = f"Bearer {cfg['api_key']}"
    return headers


def _openai_body(cfg: dict[str, Any]) -> dict[str, Any]:
    messages = _messages(cfg)
    if cfg.get("system"):
        messages.insert(0, {"role": "system", "content": cfg["system"]})
    body: dict[str, Any] = {"model": cfg["model"], "messages": messages}
    if "temperature" in cfg:
        body["temperature"] = cfg["temperature"]
    if "max_tokens" in cfg:
        body["max_tokens"] = cfg["max_tokens"]
    if cfg["json"]:
        body["response_format"] = {"type": "json_object"}
        if not any("json" in str(m.get("content", "")).lower() for m in messages):
            # OpenAI refuses json_object unless a message mentions JSON
            messages.insert(0, {"role": "system", "content": JSON_INSTRUCTION})
    body.update(cfg["options"])
    return body


def _anthropic_headers(cfg: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "hookhub-llm/1.0",
               "anthropic-version": ANTHROPIC_VERSION}
    if cfg.get("api_key"):
        headers["x-api-key"] = cfg["api_key"]
    return headers


def _anthropic_body(cfg: dict[str, Any]) -> dict[str, Any]:
    messages = _messages(cfg)
    system = [m["content"] for m in messages if m["role"] == "system" and isinstance(m["content"], str)]
    messages = [m for m in messages if m["role"] != "system"]  # the Messages API takes system apart
    if cfg.get("system"):
        system.insert(0, cfg["system"])
    if cfg["json"]:
        system.append(JSON_INSTRUCTION)
    body: dict[str, Any] = {"model": cfg["model"], "messages": messages, "max_tokens": cfg.get("max_tokens", 1024)}
    if system:
        body["system"] = "\n\n".join(system)
    if "temperature" in cfg:
        body["temperature"] = min(cfg["temperature"], 1.0)
    body.update(cfg["options"])
    return body


def _openai_output(answer: dict[str, Any]) -> dict[str, Any]:
    try:
        choice = answer["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ConnectorError(f"llm: the answer has no choices[0].message: {_short_json(answer)}") from exc
    usage = answer.get("usage") or {}
    return {
        "text": text,
        "usage": {
            "input_tokens": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"),
            "total_tokens": usage.get("total_tokens"),
        },
        "model": answer.get("model"),
        "finish_reason": choice.get("finish_reason"),
    }


def _anthropic_output(answer: dict[str, Any]) -> dict[str, Any]:
    content = answer.get("content")
    if not isinstance(content, list):
        raise ConnectorError(f"llm: the answer has no content: {_short_json(answer)}")
    text = "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    usage = answer.get("usage") or {}
    inp, outp = usage.get("input_tokens"), usage.get("output_tokens")
    return {
        "text": text,
        "usage": {
            "input_tokens": inp,
            "output_tokens": outp,
            "total_tokens": inp + outp if isinstance(inp, int) and isinstance(outp, int) else None,
        },
        "model": answer.get("model"),
        "finish_reason": answer.get("stop_reason"),
    }


def _parse_json(text: str) -> Any:
    fenced = _FENCE.match(text)
    candidate = fenced.group(1) if fenced else text.strip()
    try:
        return jsonlib.loads(candidate)
    except ValueError as exc:
        excerpt = " ".join(text.split())[:200]
        raise RetryableError(f"llm: json was asked for but the answer is not JSON ({exc}): {excerpt!r}") from exc


# --- transport -------------------------------------------------------------------------------


def _post(url: str, headers: dict[str, str], body: dict[str, Any], timeout: float, verify: bool,
          ctx: Context) -> dict:
    where = f"POST {_redact(url)}"
    started = time.monotonic()
    with guarded_session(ctx.allowed_private_networks) as session:  # redirects are not followed
        try:
            response = session.post(url, data=jsonlib.dumps(body).encode(), headers=headers,
                                     timeout=(timeout, timeout), allow_redirects=False, stream=True,
                                     verify=verify)
        except GuardError as exc:
            raise refusal(exc, "POST", url) from exc
        except requests.RequestException as exc:
            raise _classify(exc, "POST", url, timeout) from exc
        with response:
            content = _read_capped(response, MAX_RESPONSE_BYTES, started + timeout, "POST", url, timeout)
    status = response.status_code
    ctx.log.info("%s -> %s in %.0f ms", where, status, (time.monotonic() - started) * 1000)
    if status >= 400:
        detail = _error_detail(content) or _excerpt(content, response)
        if status in (401, 403):
            raise ConnectorError(
                f"{where}: the API refused the credentials ({status}: {detail}); check api_key "
                f"(and that it belongs to {urlsplit(url).hostname})"
            )
        if status >= 500 or status in (408, 409, 429):
            raise RetryableError(f"{where} answered {status}: {detail}", retry_after=_wait_hint(response))
        raise ConnectorError(f"{where} answered {status}: {detail}")
    if 300 <= status < 400:
        raise ConnectorError(f"{where} answered a redirect ({status}); set base_url to the final address")
    try:
        answer = jsonlib.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConnectorError(f"{where}: the answer is not JSON: {_excerpt(content, response)}") from exc
    if not isinstance(answer, dict):
        raise ConnectorError(f"{where}: the answer is not a JSON object: {_short_json(answer)}")
    return answer


def _wait_hint(response: requests.Response) -> float | None:
    ms = response.headers.get("retry-after-ms")  # OpenAI's finer-grained hint
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return _retry_after(response.headers.get("Retry-After"))


def _error_detail(content: bytes) -> str | None:
    """The provider's own error message: ``{"error": {"message": …}}`` (both protocols)."""
    try:
        doc = jsonlib.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type") or error.get("code")
        return f"{kind}: {error['message']}" if isinstance(kind, str) and kind else error["message"]
    if isinstance(error, str):
        return error
    return None


def _short_json(value: Any) -> str:
    text = jsonlib.dumps(value)
    return text if len(text) <= 200 else text[:200] + "…"
