"""A small Server-Sent Events client over a raw socket (so one thread can hold many streams)."""

from __future__ import annotations

import json
import selectors
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Event:
    id: str | None
    event: str
    data: dict

    @property
    def int_id(self) -> int:
        return int(self.id)


@dataclass
class Stream:
    """One open SSE response: HTTP/1.1, chunked transfer decoding, SSE field parsing."""

    sock: socket.socket
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    closed: bool = False
    _raw: bytes = b""
    _body: bytes = b""
    _chunked: bool = False
    _head_done: bool = False

    @classmethod
    def open(cls, url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Stream:
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", "Accept: text/event-stream",
                 "Connection: close"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return cls(sock)

    def feed(self) -> bool:
        """Read what is available (blocking once); False when the server closed the stream."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            self.closed = True
            return False
        self._raw += data
        if not self._head_done:
            if b"\r\n\r\n" not in self._raw:
                return True
            head, self._raw = self._raw.split(b"\r\n\r\n", 1)
            first, *rest = head.decode("latin-1").split("\r\n")
            self.status = int(first.split()[1])
            self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in rest)}
            self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
            self._head_done = True
        self._dechunk()
        self._parse()
        return True

    def _dechunk(self) -> None:
        if not self._chunked:
            self._body += self._raw
            self._raw = b""
            return
        while b"\r\n" in self._raw:
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self._body += rest[:size]
            self._raw = rest[size + 2:]
            if size == 0:
                return

    def _parse(self) -> None:
        body = self._body.replace(b"\r\n", b"\n")
        while b"\n\n" in body:
            block, body = body.split(b"\n\n", 1)
            ev_id, ev_type, data = None, "message", []
            for line in block.decode().split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "id":
                    ev_id = value
                elif name == "event":
                    ev_type = value
                elif name == "data":
                    data.append(value)
            if data:
                self.events.append(Event(ev_id, ev_type, json.loads("\n".join(data))))
        self._body = body

    def read_until(self, predicate, timeout: float = 60) -> list[Event]:
        deadline = time.monotonic() + timeout
        self.sock.settimeout(1.0)
        while not predicate(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"stream condition not met in {timeout}s; got {self.events!r}")
            if self.closed:
                raise AssertionError(f"stream closed before condition; got {self.events!r}")
            try:
                self.feed()
            except TimeoutError:
                pass
        return self.events

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def pump(streams: list[Stream], predicate, timeout: float = 60) -> None:
    """Serve many streams from one thread until ``predicate(stream)`` holds for each."""
    sel = selectors.DefaultSelector()
    for s in streams:
        s.sock.setblocking(False)
        sel.register(s.sock, selectors.EVENT_READ, s)
    deadline = time.monotonic() + timeout
    try:
        while not all(predicate(s) for s in streams):
            if time.monotonic() > deadline:
                done = sum(1 for s in streams if predicate(s))
                raise AssertionError(f"only {done}/{len(streams)} streams met the condition in {timeout}s")
            for key, _ in sel.select(timeout=0.5):
                if not key.data.feed():
                    sel.unregister(key.fileobj)
    finally:
        sel.close()
