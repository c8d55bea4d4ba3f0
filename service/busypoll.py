"""An event loop that polls for a moment before it sleeps (``VISOR_LOOP_BUSY_POLL_US``).

A client that sends one request at a time leaves the server's loop idle between its requests,
for a few hundred microseconds. Asleep in ``epoll_wait``, the loop's thread gives its core back,
and on a virtual machine an idle core halts: the next request then pays for waking the thread
and the core. Measured on the project's 2-core VM (digits over gRPC, one request in flight),
that wake-up was most of what KServe, whose ONNX Runtime threads spin on another core, had
over Visor (docs/benchmarks.md, issue 25).

So after the loop has handled I/O, its selector asks again without waiting, for up to the
configured window, before it blocks. What it costs: CPU only within that window after I/O, on a
core that would otherwise idle; once traffic stops the loop sleeps as before, and timers alone
never open the window. The same idea as Linux's ``net.core.busy_poll`` and the ``haltpoll``
cpuidle governor for guests.

While a batch runs in an inference thread (``handed_off``), the loop waits for that thread, not
for a client, and polling would take the core the batch or the clients need: it cost 8 % at 32
REST connections on 2 cores. So the loop then sleeps at once.

Python's selectors are used as they are (one ``select(0)`` per turn); only when to block
changes.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable

# Batches this process's loops handed to inference threads, not back yet. Only loop threads
# change it; with several loops in one process (tests) a race can only skip a spin.
_handed_off = 0


def handed_off(change: int) -> None:
    """+1 when the loop hands a batch to a thread, -1 when its result is back (loop thread)."""
    global _handed_off
    _handed_off += change


class BusyPollSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """``DefaultSelector`` (epoll on Linux) that polls for ``window_s`` after the last I/O."""

    def __init__(self, window_s: float) -> None:
        super().__init__()
        self.window_s = window_s
        self._last_io = -float("inf")

    def select(self, timeout: float | None = None) -> list:  # type: ignore[override]
        if (timeout is None or timeout > 0) and not _handed_off:
            now = time.monotonic()
            until = self._last_io + self.window_s
            if timeout is not None:
                until = min(until, now + timeout)
            while now < until:
                ready = super().select(0)
                if ready:
                    self._last_io = time.monotonic()
                    return ready
                now = time.monotonic()
        ready = super().select(timeout)
        if ready:
            self._last_io = time.monotonic()
        return ready


def loop_factory(window_us: float) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of event loops that busy-poll for ``window_us`` microseconds (0: plain)."""
    if window_us <= 0:
        return asyncio.SelectorEventLoop
    return lambda: asyncio.SelectorEventLoop(BusyPollSelector(window_us / 1e6))
