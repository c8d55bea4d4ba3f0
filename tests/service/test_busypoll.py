"""The busy-polling event loop (service/busypoll.py) on real sockets: it reports what a plain
loop reports, polls only in the window after I/O, and an idle loop sleeps."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import busypoll
from service.busypoll import BusyPollSelector, loop_factory


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_plain_loop_when_switched_off() -> None:
    assert loop_factory(0) is asyncio.SelectorEventLoop
    loop = loop_factory(300)()
    try:
        assert isinstance(loop._selector, BusyPollSelector)
        assert loop._selector.window_s == pytest.approx(300e-6)
    finally:
        loop.close()


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.sampled_from([0, 0.001, 0.01])), max_size=12))
def test_reports_what_a_plain_selector_reports(steps) -> None:
    """The same writes and timeouts: the same readiness, whatever the window."""
    plain, busy = selectors.DefaultSelector(), BusyPollSelector(0.005)
    pairs = [_pair(), _pair()]
    try:
        for selector, (reader, _) in zip((plain, busy), pairs, strict=True):
            selector.register(reader, selectors.EVENT_READ)
        for write, timeout in steps:
            seen = []
            for selector, (reader, writer) in zip((plain, busy), pairs, strict=True):
                if write:
                    writer.send(b"x")
                ready = selector.select(timeout)
                seen.append(sorted(key.fd == reader.fileno() for key, _ in ready))
                if ready:
                    reader.recv(64)
            assert seen[0] == seen[1]
    finally:
        for selector in (plain, busy):
            selector.close()
        for a, b in pairs:
            a.close()
            b.close()


def _blocking_waits(handed_off: int) -> list[float | None]:
    """The blocking selects made for a request that arrives 20 ms after the last I/O."""
    reader, writer = _pair()
    selector = BusyPollSelector(0.5)
    blocking: list[float | None] = []
    original = selectors.DefaultSelector.select

    def spy(self, timeout=None):
        if timeout != 0:
            blocking.append(timeout)
        return original(self, timeout)

    selector.register(reader, selectors.EVENT_READ)
    try:
        writer.send(b"first")
        assert selector.select(1.0)  # I/O: the window opens
        reader.recv(64)
        selectors.DefaultSelector.select = spy
        busypoll.handed_off(handed_off)
        try:
            later = time.monotonic() + 0.02
            # the write happens while the selector spins (from the same thread: a timer would
            # need the loop, so poll by hand until the write time passes)
            while time.monotonic() < later:
                pass
            writer.send(b"second")
            assert selector.select(1.0)
        finally:
            busypoll.handed_off(-handed_off)
            selectors.DefaultSelector.select = original
    finally:
        selector.close()
        reader.close()
        writer.close()
    return blocking


def test_a_lone_request_in_the_window_is_picked_up_without_sleeping() -> None:
    """After I/O, data that arrives within the window is found by a poll, not a blocking wait."""
    assert _blocking_waits(0) == [], "the second request was waited for with a blocking select"


def test_no_polling_while_a_batch_runs_in_a_thread() -> None:
    """The loop then waits for the inference thread: it blocks at once, leaving the core."""
    assert _blocking_waits(1) == [1.0]


def test_an_idle_loop_sleeps_and_timers_do_not_wake_the_spin() -> None:
    """With a 50 ms window: one burst of I/O costs at most about the window in CPU, and a
    second of timers and silence afterwards costs next to nothing."""
    loop = loop_factory(50_000)()
    reader, writer = _pair()

    async def scenario() -> tuple[float, float]:
        got = asyncio.Event()
        loop.add_reader(reader, lambda: (reader.recv(64), got.set()))
        start = time.thread_time()
        writer.send(b"x")
        await got.wait()
        await asyncio.sleep(0.3)  # the window passes: the loop must block again
        after_io = time.thread_time() - start
        start = time.thread_time()
        for _ in range(20):  # timers alone: no I/O, so no spin
            await asyncio.sleep(0.05)
        idle = time.thread_time() - start
        loop.remove_reader(reader)
        return after_io, idle

    try:
        after_io, idle = loop.run_until_complete(scenario())
    finally:
        loop.close()
        reader.close()
        writer.close()
    assert after_io < 0.05 + 0.1, f"spun {after_io:.3f} s of CPU after one event"
    assert idle < 0.05, f"an idle loop with timers used {idle:.3f} s of CPU in 1 s"
