"""Local doorbells: wake the hub's processes on this machine at once (the embedded hub has no Redis).

The embedded queue is Huey's SQLite storage, which has no blocking read: an idle worker polled it
with a back-off that grew to 200 ms, so a webhook's first node waited up to that long, and a sync
webhook's answer waited up to 10 ms for the API's next look at the run. A doorbell is a Unix
datagram socket in the abstract namespace (no file, gone with its process) that a waiting process
binds; its name is listed as an empty file in ``<data_dir>/doorbells``. Ringing sends one byte to
every listed socket of a channel; a listing whose socket is gone is removed.

A ring only says "look again": the database stays the truth, and every waiter also looks on its own
after its timeout, so a lost ring costs latency, never work. Anyone on the machine may ring (abstract
sockets have no file permissions); that, too, only makes a waiter look once more. Sandboxed attempts
run in their own network namespace and cannot reach them.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import itertools
import logging
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

from huey.storage import SqliteStorage

log = logging.getLogger("hookhub.doorbell")

__all__ = ["Doorbells", "DoorbellSqliteStorage"]


_senders: dict[int, socket.socket] = {}
_instances = itertools.count(1)  # two hubs of one data dir in one process get doorbells of their own


@atexit.register
def _close_senders() -> None:
    for sock in _senders.values():
        sock.close()


def _sender() -> socket.socket:
    """One unbound, non-blocking datagram socket per process rings every doorbell."""
    sock = _senders.get(os.getpid())
    if sock is None:
        mine = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        mine.setblocking(False)
        sock = _senders.setdefault(os.getpid(), mine)
        if sock is not mine:  # another thread made one first
            mine.close()
    return sock


class Doorbells:
    """The doorbells of one data directory: ``wait(channel)`` in one process, ``ring(channel)`` in any."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir) / "doorbells"
        self._key = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
        self._lock = threading.Lock()
        self._bound: dict[str, socket.socket] = {}
        self._pid = os.getpid()
        self._token = f"{self._pid}-{next(_instances)}"
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _name(self, channel: str, token: str) -> str:
        return f"hookhub-{self._key}-{channel}-{token}"

    def bind(self, channel: str) -> socket.socket:
        """This process's doorbell for ``channel`` (bound and listed on first use)."""
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "the hub's doorbells are closed")
            if self._pid != os.getpid():  # a forked child: the parent's doorbells are not its own
                for inherited in self._bound.values():
                    inherited.close()
                self._bound.clear()
                self._pid = os.getpid()
                self._token = f"{self._pid}-{next(_instances)}"
            sock = self._bound.get(channel)
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind("\0" + self._name(channel, self._token))
                sock.setblocking(False)
                self.dir.mkdir(mode=0o700, exist_ok=True)
                (self.dir / f"{channel}-{self._token}").touch()
                self._bound[channel] = sock
            return sock

    def wait(self, channel: str, timeout: float) -> bool:
        """Block until a ring of ``channel`` reaches this thread (True) or ``timeout`` passes (False).

        Each ring wakes one waiting thread of each process, as each enqueue has one task for it:
        threads that see a ring another thread took go on waiting. Rings sent before the wait count.
        """
        sock = self.bind(channel)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                return False
            try:
                sock.recv(16)
                return True
            except (BlockingIOError, InterruptedError):
                continue

    def ring(self, channel: str) -> None:
        """Wake every process waiting on ``channel``; never raises."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return  # nobody has waited yet
        prefix = channel + "-"
        for entry in names:
            token = entry[len(prefix):] if entry.startswith(prefix) else ""
            if not token.replace("-", "").isdigit():
                continue
            try:
                _sender().sendto(b"!", "\0" + self._name(channel, token))
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):  # its process is gone
                    with contextlib.suppress(OSError):
                        (self.dir / entry).unlink()
                elif exc.errno != errno.EAGAIN:  # EAGAIN: its buffer is full of rings already
                    log.debug("doorbell %s: %s", entry, exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for channel, sock in self._bound.items():
                sock.close()
                with contextlib.suppress(OSError):
                    (self.dir / f"{channel}-{self._token}").unlink()
            self._bound.clear()


class DoorbellSqliteStorage(SqliteStorage):
    """Huey's SQLite queue with a blocking read: an empty queue waits for an enqueue's doorbell.

    ``blocking`` tells Huey's worker loop not to sleep between empty reads (it waits here instead,
    at most ``wait_seconds``, after which it looks anyway). Every enqueue, from any process of the
    hub, rings the ``queue`` doorbell.
    """

    blocking = True

    def __init__(self, *args: Any, doorbells: Doorbells, wait_seconds: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.doorbells = doorbells
        self.wait_seconds = wait_seconds

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        super().enqueue(data, priority)
        self.doorbells.ring("queue")

    def dequeue(self) -> bytes | None:
        self.doorbells.bind("queue")  # listed before the look: an enqueue after it rings this process
        data = super().dequeue()
        if data is None and self.doorbells.wait("queue", self.wait_seconds):
            data = super().dequeue()
        return data
