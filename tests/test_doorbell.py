"""hub.doorbell: local doorbells between real processes, and the embedded queue's blocking read."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from hub.doorbell import Doorbells, DoorbellSqliteStorage
from hub.services.live import waker_for
from tests.conftest import _make_hub, wait_until

WAITER = """
import sys, time
from hub.doorbell import Doorbells
bells = Doorbells(sys.argv[1])
bells.bind("queue")
print("ready", flush=True)
t0 = time.monotonic()
rung = bells.wait("queue", 60)
print("rung" if rung else "timeout", round(time.monotonic() - t0, 3), flush=True)
bells.close()
"""


def test_a_ring_wakes_a_waiting_process(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert [name.rsplit("-", 1)[0] for name in os.listdir(tmp_path / "doorbells")] == [f"queue-{proc.pid}"]
        Doorbells(tmp_path).ring("live")  # another channel: not this waiter's
        time.sleep(0.2)
        assert proc.poll() is None
        Doorbells(tmp_path).ring("queue")
        out, _ = proc.communicate(timeout=20)  # it waits 60 s unless the ring reached it
    finally:
        proc.kill()
    assert out.split()[0] == "rung"
    assert os.listdir(tmp_path / "doorbells") == []  # closed: unlisted


def test_a_ring_waiting_before_the_wait_counts_and_silence_times_out(tmp_path) -> None:
    bells = Doorbells(tmp_path)
    try:
        bells.bind("queue")
        Doorbells(tmp_path).ring("queue")
        Doorbells(tmp_path).ring("queue")
        assert bells.wait("queue", 5) is True  # one ring per wait: one task per ring
        assert bells.wait("queue", 5) is True
        t0 = time.monotonic()
        assert bells.wait("queue", 0.2) is False
        assert time.monotonic() - t0 >= 0.19
    finally:
        bells.close()


def test_each_ring_wakes_one_of_the_waiting_threads(tmp_path) -> None:
    bells = Doorbells(tmp_path)
    woken: list[bool] = []
    threads = [threading.Thread(target=lambda: woken.append(bells.wait("queue", 1.5))) for _ in range(3)]
    bells.bind("queue")  # listed before the rings
    try:
        for t in threads:
            t.start()
        time.sleep(0.2)
        Doorbells(tmp_path).ring("queue")
        Doorbells(tmp_path).ring("queue")
        for t in threads:
            t.join(10)
        assert sorted(woken) == [False, True, True]
    finally:
        bells.close()


def test_two_hubs_of_one_data_dir_in_one_process_each_get_their_rings(tmp_path) -> None:
    first, second = Doorbells(tmp_path), Doorbells(tmp_path)
    try:
        first.bind("queue")
        second.bind("queue")  # no clash with the first one's socket
        Doorbells(tmp_path).ring("queue")
        assert first.wait("queue", 5) and second.wait("queue", 5)
    finally:
        first.close()
        second.close()


def test_a_listing_whose_process_is_gone_is_removed(tmp_path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "doorbells").mkdir()
    stale = tmp_path / "doorbells" / f"queue-{gone.stdout.strip()}-1"
    stale.touch()
    Doorbells(tmp_path).ring("queue")
    assert not stale.exists()
    Doorbells(tmp_path / "nowhere").ring("queue")  # nobody ever waited there: nothing to do, no error


def test_the_queue_read_blocks_until_an_enqueue_rings(tmp_path) -> None:
    def storage() -> DoorbellSqliteStorage:
        return DoorbellSqliteStorage("q", filename=str(tmp_path / "queue.db"), doorbells=Doorbells(tmp_path),
                                     wait_seconds=60)

    reader, writer = storage(), storage()
    got: list[bytes | None] = []
    thread = threading.Thread(target=lambda: got.append(reader.dequeue()))
    thread.start()
    try:
        time.sleep(0.3)
        assert got == []  # waiting, not spinning back with nothing
        writer.enqueue(b"task-1")
        thread.join(20)  # without the doorbell it would wait 60 s
        assert got == [b"task-1"]
        writer.enqueue(b"task-2")
        assert reader.dequeue() == b"task-2"  # something queued: no wait at all
    finally:
        thread.join(0)
        reader.doorbells.close()
        writer.doorbells.close()


def test_a_closed_hubs_live_poller_stops_and_the_next_hub_gets_its_own(sqlite_backend) -> None:
    # One process may open hubs one after another (the tests do): a poller left running would go on
    # reading whatever database the process opens next.
    hubs = _make_hub(sqlite_backend)
    hub = next(hubs)
    waker = waker_for(None, hub.huey)
    waker.start()
    seen = waker.generation
    listing = hub.settings.data_dir / "doorbells"
    wait_until("the poller waits on its doorbell", lambda: listing.is_dir() and any(
        name.startswith("live-") for name in os.listdir(listing)), timeout=5)
    hub.huey.storage.doorbells.ring("live")
    assert waker.wait(seen, 2) > seen  # it is running, woken by a ring
    assert not waker.stopped
    next(hubs, None)  # closes the hub and its doorbells
    wait_until("the poller stops", lambda: waker.stopped, timeout=5)
    hubs = _make_hub(sqlite_backend)
    again = next(hubs)
    try:
        assert waker_for(None, again.huey) is not waker
    finally:
        next(hubs, None)
