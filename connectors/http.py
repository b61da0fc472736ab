"""The built-in ``http`` connector: one outbound HTTP request per attempt.

A plugin module like any third party's: ``setup.cfg`` declares it in the ``hookhub`` entry-point
group and :func:`hookhub_connectors` hands over :class:`Http`.

Outbound requests go through an SSRF guard (``connectors._net``): every address a name resolves
to, on every redirect hop, is checked before a socket is opened, and the socket is opened to the
address that was checked. Private, loopback, link-local, multicast, reserved and unspecified
addresses are refused unless the operator allows them (``HOOKHUB_ALLOW_PRIVATE_NETWORKS``,
handed to the connector as ``ctx.allowed_private_networks``).
"""

from __future__ import annotations

import base64
import email.utils
import json as jsonlib
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from connectors._net import GuardError, guarded_session, refusal
from hub.sdk import Connector, ConnectorError, Context, RetryableError, hookimpl

__all__ = ["Http", "hookhub_connectors"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_TIMEOUT_SECONDS = 300
MAX_REDIRECTS = 5
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
MAX_RESPONSE_BYTES = 100 * 1024 * 1024
USER_AGENT = "hookhub-http/1.0"
_CHUNK = 64 * 1024
_EXCERPT = 200

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 header field name
_SCALAR = (str, int, float, bool)


def _header_name(value: str) -> None:
    if not _TOKEN_RE.match(value):
        raise ValidationError(f"{value!r} is not a valid HTTP header name.")


def _header_value(value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValidationError("Header values must not contain CR, LF or NUL.")


def _http_url(value: str) -> None:
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValidationError("URL must not contain whitespace or control characters.")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValidationError(f"Not a valid URL: {exc}.") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError("URL must start with http:// or https://.")
    if not parts.hostname:
        raise ValidationError("URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("Put credentials in `auth`, not in the URL.")


def _params(value: dict[str, Any]) -> None:
    """query/form values: a scalar, null, or a list of scalars."""
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not all(i is None or isinstance(i, _SCALAR) for i in items):
            raise ValidationError(f"{key}: values must be strings, numbers, booleans or lists of them.")


class AuthSchema(Schema):
    """``{type: bearer, token}``, ``{type: basic, username, password}`` or ``{type: header, name, value}``."""

    class Meta:
        unknown = "raise"

    type = fields.String(required=True, validate=validate.OneOf(["bearer", "basic", "header"]))
    token = fields.String(metadata={"description": "bearer: the token"})
    username = fields.String(metadata={"description": "basic: the user name"})
    password = fields.String(load_default="", metadata={"description": "basic: the password"})
    name = fields.String(validate=_header_name, metadata={"description": "header: the header name"})
    value = fields.String(validate=_header_value, metadata={"description": "header: the header value"})

    _NEEDS = {"bearer": ("token",), "basic": ("username",), "header": ("name", "value")}
    _ALLOWED = {"bearer": {"token"}, "basic": {"username", "password"}, "header": {"name", "value"}}

    @validates_schema
    def _by_type(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("type")
        if kind not in self._NEEDS:
            return
        errors: dict[str, list[str]] = {}
        for key in self._NEEDS[kind]:
            if not data.get(key):
                errors[key] = [f"Required when type is {kind}."]
        for key in data.keys() - self._ALLOWED[kind] - {"type"}:
            if key == "password" and not data[key]:
                continue  # the load_default
            errors[key] = [f"Not used when type is {kind}."]
        if errors:
            raise ValidationError(errors)


class Http(Connector):
    """Send an HTTP request and return the response."""

    name = "http"
    version = "1.0.0"
    description = "Send an HTTP request; output {status, headers, body} (body parsed when JSON)."
    permissions = {"network": True}

    class Config(Connector.Config):
        method = fields.String(
            load_default="GET",
            validate=validate.OneOf(METHODS),
            metadata={"description": "HTTP method (case-insensitive)."},
        )
        url = fields.String(
            required=True,
            validate=_http_url,
            metadata={"format": "uri", "description": "http:// or https:// URL."},
        )
        headers = fields.Dict(
            keys=fields.String(validate=_header_name),
            values=fields.String(validate=_header_value),
            load_default=dict,
            metadata={"description": "Request headers."},
        )
        query = fields.Dict(
            keys=fields.String(),
            values=fields.Raw(allow_none=True),
            load_default=dict,
            validate=_params,
            metadata={"description": "Query parameters, added to those already in the URL."},
        )
        json = fields.Raw(
            allow_none=True,
            metadata={"description": "A JSON request body (any JSON value). Only one of json/body/form."},
        )
        body = fields.String(metadata={"description": "A raw request body. Only one of json/body/form."})
        form = fields.Dict(
            keys=fields.String(),
            values=fields.Raw(allow_none=True),
            validate=_params,
            metadata={
                "description": "An application/x-www-form-urlencoded body. Only one of json/body/form."
            },
        )
        timeout_seconds = fields.Float(
            load_default=30.0,
            validate=validate.Range(min=0, max=MAX_TIMEOUT_SECONDS, min_inclusive=False),
            metadata={"description": "Connect, read and whole-response deadline."},
        )
        auth = fields.Nested(AuthSchema, metadata={"description": "bearer, basic or header auth."})
        verify_tls = fields.Boolean(load_default=True)
        max_response_bytes = fields.Integer(
            load_default=DEFAULT_MAX_RESPONSE_BYTES,
            validate=validate.Range(min=1, max=MAX_RESPONSE_BYTES),
            metadata={"description": "Refuse a (decoded) response body larger than this."},
        )
        follow_redirects = fields.Boolean(load_default=True)
        max_redirects = fields.Integer(
            load_default=MAX_REDIRECTS,
            validate=validate.Range(min=0, max=MAX_REDIRECTS),
            metadata={"description": "How many redirects to follow when follow_redirects is true."},
        )
        fail_on_status = fields.Boolean(
            load_default=True,
            metadata={"description": "Fail on 4xx/5xx: 408, 429 and 5xx are retryable, other 4xx are not."},
        )

        @pre_load
        def _upper_method(self, data: Any, **_: Any) -> Any:
            if isinstance(data, dict) and isinstance(data.get("method"), str):
                data = {**data, "method": data["method"].upper()}
            return data

        @validates_schema(skip_on_field_errors=False)
        def _one_body(self, data: dict[str, Any], **_: Any) -> None:
            given = [k for k in ("json", "body", "form") if k in data]
            if len(given) > 1:
                message = f"Only one of json, body or form may be set (got {', '.join(given)})."
                raise ValidationError({k: [message] for k in given})

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        try:
            cfg = self.Config().load(config)
        except ValidationError as exc:
            raise ConnectorError(f"invalid http config: {exc.messages}") from exc

        headers = {"User-Agent": USER_AGENT}
        headers.update(cfg["headers"])
        sensitive: set[str] = set()
        auth = cfg.get("auth")
        request_auth = None
        if auth:
            if auth["type"] == "bearer":
                _set_header(headers, "Authorization", f"Bearer {auth['token']}")
            elif auth["type"] == "basic":
                request_auth = requests.auth.HTTPBasicAuth(auth["username"], auth.get("password", ""))
            else:
                _set_header(headers, auth["name"], auth["value"])
                sensitive.add(auth["name"].lower())
        if ctx.idempotency_key and not _has_header(headers, "Idempotency-Key"):
            headers["Idempotency-Key"] = ctx.idempotency_key

        kwargs: dict[str, Any] = {}
        if "json" in cfg:
            kwargs["data"] = jsonlib.dumps(cfg["json"]).encode()
            if not _has_header(headers, "Content-Type"):
                headers["Content-Type"] = "application/json"
        elif "body" in cfg:
            kwargs["data"] = cfg["body"].encode()
            if not _has_header(headers, "Content-Type"):
                headers["Content-Type"] = "text/plain; charset=utf-8"
        elif "form" in cfg:
            kwargs["data"] = _pairs(cfg["form"])

        method, url, timeout = cfg["method"], cfg["url"], cfg["timeout_seconds"]
        started = time.monotonic()
        deadline = started + timeout
        with guarded_session(
            ctx.allowed_private_networks,
            # ssrfguard refuses a redirect *response* at 0 even when not following; when not
            # following, the 3xx is the answer.
            max_redirects=cfg["max_redirects"] if cfg["follow_redirects"] else MAX_REDIRECTS,
            sensitive_headers=sensitive,
        ) as session:
            try:
                response = session.request(
                    method,
                    url,
                    params=_pairs(cfg["query"]),
                    headers=headers,
                    auth=request_auth,
                    timeout=(timeout, timeout),
                    verify=cfg["verify_tls"],
                    allow_redirects=cfg["follow_redirects"],
                    stream=True,
                    **kwargs,
                )
            except GuardError as exc:
                raise refusal(exc, method, url) from exc
            except requests.RequestException as exc:
                raise _classify(exc, method, url, timeout) from exc
            with response:
                content = _read_capped(response, cfg["max_response_bytes"], deadline, method, url, timeout)

        elapsed_ms = (time.monotonic() - started) * 1000
        ctx.log.info("%s %s -> %s in %.0f ms", method, _redact(url), response.status_code, elapsed_ms)
        status = response.status_code
        if cfg["fail_on_status"] and status >= 400:
            excerpt = _excerpt(content, response)
            where = f"{method} {_redact(response.url or url)}"
            if status >= 500 or status in (408, 429):
                raise RetryableError(
                    f"{where} answered {status} {response.reason or ''}".rstrip() + f": {excerpt}",
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
            raise ConnectorError(
                f"{where} answered {status} {response.reason or ''}".rstrip() + f": {excerpt}"
            )

        output: dict[str, Any] = {
            "status": status,
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "url": response.url,
        }
        output.update(_body(content, response, method))
        return output


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Http]


# --- helpers ---------------------------------------------------------------------------------


def _has_header(headers: dict[str, str], name: str) -> bool:
    return any(k.lower() == name.lower() for k in headers)


def _set_header(headers: dict[str, str], name: str, value: str) -> None:
    for key in [k for k in headers if k.lower() == name.lower()]:
        del headers[key]
    headers[name] = value


def _pairs(params: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            out.append((key, ("true" if item else "false") if isinstance(item, bool) else str(item)))
    return out


def _classify(exc: requests.RequestException, method: str, url: str, timeout: float) -> ConnectorError:
    where = f"{method} {_redact(url)}"
    if isinstance(exc, requests.Timeout):
        return RetryableError(f"{where} timed out after {timeout:g} s")
    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectorError(f"{where}: TLS error: {_short(exc)} (verify_tls: false skips verification)")
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return RetryableError(f"{where}: connection failed: {_short(exc)}")
    if isinstance(exc, requests.TooManyRedirects):
        return ConnectorError(f"{where}: too many redirects")
    return ConnectorError(f"{where}: {_short(exc)}")


def _read_capped(
    response: requests.Response, limit: int, deadline: float, method: str, url: str, timeout: float
) -> bytes:
    """The decoded body, refusing more than ``limit`` bytes and a body slower than the deadline."""
    where = f"{method} {_redact(response.url or url)}"
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit and "Content-Encoding" not in response.headers:
        raise ConnectorError(
            f"{where}: response of {int(declared)} bytes is larger than max_response_bytes={limit}"
        )
    if method == "HEAD":
        return b""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            # read1: whatever has arrived (decoded), so a server dripping bytes cannot hold us
            # past the deadline the way read(amt) — which waits for amt bytes — would.
            chunk = response.raw.read1(_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ConnectorError(f"{where}: response is larger than max_response_bytes={limit}")
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise RetryableError(f"{where} timed out after {timeout:g} s while reading the response")
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise RetryableError(f"{where} timed out after {timeout:g} s while reading the response") from exc
    except urllib3.exceptions.DecodeError as exc:
        raise ConnectorError(f"{where}: cannot decode the response body: {_short(exc)}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise RetryableError(f"{where}: connection failed while reading the response: {_short(exc)}") from exc
    return b"".join(chunks)


def _body(content: bytes, response: requests.Response, method: str) -> dict[str, Any]:
    if method == "HEAD" or not content:
        return {"body": None if _is_json(response) else ""}
    charset = response.encoding if "charset" in response.headers.get("Content-Type", "").lower() else None
    if _is_json(response):
        try:
            return {"body": jsonlib.loads(content.decode(charset or "utf-8"))}
        except (ValueError, LookupError):
            pass  # not what it says it is: hand over the text
    try:
        return {"body": content.decode(charset or "utf-8")}
    except (UnicodeDecodeError, LookupError):
        return {"body": base64.b64encode(content).decode("ascii"), "body_encoding": "base64"}


def _is_json(response: requests.Response) -> bool:
    kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _excerpt(content: bytes, response: requests.Response) -> str:
    text = " ".join(content[: _EXCERPT * 4].decode("utf-8", "replace").split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _redact(url: str) -> str:
    """The URL without its query string, which often carries keys."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
