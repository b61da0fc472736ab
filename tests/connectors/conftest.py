"""Real HTTP servers on loopback for connector tests, and a record of outbound connects."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hub.sdk import Context

# --- every socket.connect() of the process, while a test asks for it ------------------------

_connects: list[list[tuple[Any, ...]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _connects:
        _connects[-1].append(args[1])


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one is idle unless a test records


@pytest.fixture
def connects() -> Iterator[list[tuple[Any, ...]]]:
    """The addresses every socket in this process tried to connect to during the test."""
    seen: list[tuple[Any, ...]] = []
    _connects.append(seen)
    try:
        yield seen
    finally:
        _connects.remove(seen)


# --- a programmable HTTP server ------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    host: str
    port: int
    requests: list[Seen] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
        self.server.record.requests.append(seen)
        q = {k: v[-1] for k, v in seen.query.items()}
        route = parts.path.rstrip("/") or "/"

        if route == "/echo":
            payload = {
                "method": seen.method,
                "path": seen.path,
                "query": seen.query,
                "headers": {k.lower(): v for k, v in seen.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            self._send(200, json.dumps(payload).encode(), "application/json")
        elif route == "/text":
            self._send(200, "plain ünïcode text".encode(), "text/plain; charset=utf-8")
        elif route == "/badjson":
            self._send(200, b"{not json", "application/json")
        elif route == "/binary":
            self._send(200, bytes(range(256)), "application/octet-stream")
        elif route.startswith("/status/"):
            code = int(route.rsplit("/", 1)[1])
            extra = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
            self._send(code, q.get("body", f"status {code}").encode(), "text/plain", extra)
        elif route == "/slow":
            time.sleep(float(q.get("sleep", "2")))
            self._send(200, b"late", "text/plain")
        elif route == "/drip":  # headers at once, then a byte every `every` seconds
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                for _ in range(int(q.get("n", "20"))):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(float(q.get("every", "0.2")))
            except OSError:
                pass
        elif route == "/big":  # n bytes, with or without Content-Length
            n = int(q["n"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if q.get("length") == "1":
                self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                for start in range(0, n, 65536):
                    self.wfile.write(b"a" * min(65536, n - start))
            except OSError:
                pass  # the client hung up, as it should
        elif route == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/redirect":
            self.send_response(int(q.get("code", "302")))
            self.send_header("Location", q["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no such route", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout tests)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    record: Server


class _HTTPServer6(_HTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


def _serve(host: str) -> Iterator[Server]:
    cls = _HTTPServer6 if ":" in host else _HTTPServer
    httpd = cls((host, 0), _Handler)
    record = Server(host, httpd.server_address[1])
    httpd.record = record
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1."""
    yield from _serve("127.0.0.1")


@pytest.fixture
def other_server() -> Iterator[Server]:
    """A second real server, on 127.0.0.2 (still loopback, a different address)."""
    yield from _serve("127.0.0.2")


@pytest.fixture
def server6() -> Iterator[Server]:
    """A real HTTP server on ::1."""
    yield from _serve("::1")


def make_ctx(*allowed: str, key: str = "k" * 64) -> Context:
    return Context(
        input=None,
        run_id=1,
        node_id="fetch",
        attempt=1,
        idempotency_key=key,
        allowed_private_networks=tuple(allowed),
    )


@pytest.fixture
def context_for() -> Any:
    """``context_for("10.0.0.0/8", ...)``: a context with that private-network allowance."""
    return make_ctx


@pytest.fixture
def ctx() -> Context:
    """A context whose operator allows loopback, as the test configuration does."""
    return make_ctx("127.0.0.0/8")
