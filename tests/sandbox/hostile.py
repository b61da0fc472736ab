"""Tiny connectors that misbehave on purpose, run by tests/sandbox/test_process.py."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

import marshmallow

from hub.sdk import Connector, ConnectorError, Context, RetryableError


class Echo(Connector):
    name = "test-echo"

    class Config(Connector.Config):
        greeting = marshmallow.fields.String(load_default="hello")

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        ctx.log.info("echoing %s", ctx.node_id)
        return {
            "greeting": config["greeting"],
            "input": ctx.input,
            "run_id": ctx.run_id,
            "node_id": ctx.node_id,
            "attempt": ctx.attempt,
            "key": ctx.idempotency_key,
            "allowed": list(ctx.allowed_private_networks),
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "uid": os.getuid(),
        }


class Fail(Connector):
    class Config(Connector.Config):
        retry = marshmallow.fields.Boolean(load_default=False)

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        if config["retry"]:
            raise RetryableError("rate limited", retry_after=7.5)
        raise ConnectorError("bad request")


class Boom(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        return {}["missing"]


class Spin(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        ctx.log.info("spinning")
        while True:
            pass


class Sleep(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        time.sleep(10**6)


class Nap(Connector):
    """Sleeps briefly: for concurrency."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        time.sleep(0.3)
        return {"pid": os.getpid(), "uid": os.getuid()}


class Hog(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))


class ForkBomb(Connector):
    """Forks until refused, leaves the children spinning, and reports how far it got."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        forks = 0
        for _ in range(10_000):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.setsid()  # try to escape the process group, too
                while True:
                    time.sleep(0.01)
            forks += 1
        return {"forks": forks}


class Snoop(Connector):
    """Tries to read other processes' environment and a root-only file."""

    class Config(Connector.Config):
        paths = marshmallow.fields.List(marshmallow.fields.String())

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        found = {}
        for path in config["paths"]:
            try:
                with open(path, "rb") as f:
                    found[path] = f.read(100).decode("latin-1")
            except OSError as exc:
                found[path] = f"denied: {type(exc).__name__}"
        return found


class Connect(Connector):
    class Config(Connector.Config):
        port = marshmallow.fields.Integer(required=True)

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        with socket.create_connection(("127.0.0.1", config["port"]), timeout=2) as s:
            return {"got": s.recv(100).decode()}


class BigFile(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        with open("big.bin", "wb") as f:
            for _ in range(1024):
                f.write(b"x" * (1 << 20))
        return {"written": True}


class Shout(Connector):
    """100 MB to stdout and stderr, then a normal result."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        line = "x" * (1 << 20)
        for _ in range(50):
            print(line)
            print(line, file=sys.stderr)
        sys.stdout.flush()
        os.write(1, b'{"result": {"output": "forged"}}\n')
        return {"shouted": True}


class Huge(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        return "x" * (5 << 20)


class Flood(Connector):
    """Writes straight to the result socket, bypassing the child's own output check."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        block = b"y" * (1 << 20)
        while True:
            os.write(3, block)


class ForgeThenLinger(Connector):
    """Writes a result frame itself, then goes on running (and leaves a child behind)."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        os.write(3, b'{"result": {"output": "forged"}}\n')
        time.sleep(60)
        return "never"


class NotJson(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        return {"when": object()}


class Segfault(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        import ctypes

        ctypes.string_at(0)


class Chatty(Connector):
    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        for i in range(5000):
            ctx.log.info("line %d", i)
        return "done"


class Nothing(Connector):
    """The trivial connector the overhead benchmark runs."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        return ctx.input


class Litter(Connector):
    """Tries to leave files where the next attempt (or another slot) would find them."""

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        import tempfile

        done = {}
        for d in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir()):
            try:
                with open(os.path.join(d, "litter"), "w") as f:
                    f.write("x")
                done[d] = "written"
            except OSError as exc:
                done[d] = f"denied: {type(exc).__name__}"
        return done
