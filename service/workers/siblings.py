"""Worker processes of one server sharing gRPC calls and feedback lookups over Unix sockets.

The workers share the gRPC port (SO_REUSEPORT), and the kernel spreads connections, not calls:
one client on one HTTP/2 connection reaches one worker. So each worker also listens on a Unix
socket in a folder private to the server, and publishes how many calls it holds and how busy its
event loop is in a small shared-memory file beside it. A worker whose loop is saturated forwards
the next ``ModelInfer`` to a less busy sibling holding fewer calls, as the bytes it received: the
sibling parses, infers and answers it exactly as if the call had come to it, and the answer's
bytes (or its status and message) go back through the first worker. A call that finds the worker
idle is never forwarded, so a lone request pays nothing. Feedback for a request id another worker
answered is looked up there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import mmap
import os
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.errors import InvalidInput, UnknownRequest, VisorError
from service.monitoring import FeedbackResult

log = logging.getLogger(__name__)

ENV_DIR = "VISOR_WORKERS_DIR"  # set by the parent for its workers; not a user setting

# A frame: its length (of what follows), the call id, a kind (request) or status (answer), a
# timeout in seconds (requests; 0 = none), then the payload.
_HEAD = struct.Struct("<IIBd")
# A worker's calls held and its event loop's busy share, in its .load file (shared memory).
_BOARD = struct.Struct("<if")
_LEN = struct.Struct("<I")
INFER, FEEDBACK = 1, 2
OK = 0  # any other status of an answer is a grpc.StatusCode's number; the payload its message
_RESCAN_S = 1.0
_BUSY_PERIOD_S = 0.1  # how often a worker measures its loop's busy share
_MAX_FRAME = 1 << 31


class SiblingError(Exception):
    """A forwarded call's failure: ``status`` is a grpc.StatusCode number, OK never."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SiblingGone(Exception):
    """The sibling closed its socket (stopped or died) before answering."""


class _Frames(asyncio.Protocol):
    """Length-prefixed frames over one Unix socket, both directions; ``on_frame`` per frame."""

    def __init__(self, on_frame: Callable[[int, int, float, bytes], None]) -> None:
        self._on_frame = on_frame
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(buf)
            end = _LEN.size + size
            if len(buf) < end:
                return
            _, call, kind, timeout = _HEAD.unpack_from(buf)
            payload = bytes(buf[_HEAD.size : end])
            del buf[:end]
            self._on_frame(call, kind, timeout, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, call: int, kind: int, timeout: float, payload: bytes) -> None:
        assert self.transport is not None
        size = _HEAD.size - _LEN.size + len(payload)
        if size >= _MAX_FRAME:
            raise ValueError("message too large to forward")
        self.transport.write(_HEAD.pack(size, call, kind, timeout) + payload)


class _Link:
    """This worker's connection to one sibling: forwarded calls and their answers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: dict[int, asyncio.Future] = {}
        self._next = 0
        self._frames: _Frames | None = None
        self._board: mmap.mmap | None = None

    async def connect(self) -> None:
        with path_board(self.path).open("rb") as f:
            self._board = mmap.mmap(f.fileno(), _BOARD.size, prot=mmap.PROT_READ)
        loop = asyncio.get_running_loop()
        _, self._frames = await loop.create_unix_connection(
            lambda: _Frames(self._answer), str(self.path)
        )
        self._frames.closed.add_done_callback(lambda _: self._gone())

    @property
    def load(self) -> tuple[int, float]:
        """The calls the sibling holds and its loop's busy share, as it published them."""
        return _BOARD.unpack_from(self._board) if self._board is not None else (0, 0.0)

    @property
    def up(self) -> bool:
        return self._frames is not None and not self._frames.closed.done()

    async def call(self, kind: int, payload: bytes, timeout: float | None) -> bytes:
        if not self.up:
            raise SiblingGone(str(self.path))
        self._next = (self._next + 1) & 0xFFFFFFFF
        call = self._next
        future = asyncio.get_running_loop().create_future()
        self.pending[call] = future
        try:
            self._frames.send(call, kind, timeout or 0.0, payload)  # type: ignore[union-attr]
            status, answer = await future
        finally:
            self.pending.pop(call, None)
        if status != OK:
            raise SiblingError(status, answer.decode("utf-8", "replace"))
        return answer

    def _answer(self, call: int, status: int, _timeout: float, payload: bytes) -> None:
        future = self.pending.get(call)
        if future is not None and not future.done():
            future.set_result((status, payload))

    def _gone(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(SiblingGone(str(self.path)))
        self.pending.clear()

    def close(self) -> None:
        if self._frames is not None and self._frames.transport is not None:
            self._frames.transport.close()
        if self._board is not None:
            self._board.close()
            self._board = None


def path_board(socket_path: Path) -> Path:
    """The file where the worker listening on ``socket_path`` publishes its load."""
    return socket_path.with_suffix(".load")


Handler = Callable[[bytes, float | None], Awaitable[bytes]]


class Siblings:
    """This worker's socket for its siblings' calls, and its links to theirs.

    ``handlers[kind](payload, timeout)`` answers a sibling's call: the answer's bytes, or a
    ``SiblingError`` whose status and message travel back.
    """

    def __init__(self, folder: Path, handlers: dict[int, Handler], busy: float = 0.85) -> None:
        self.folder = folder
        self._busy_at = busy  # forward only while this worker's loop is at least this busy
        self.busy = 0.0  # this worker's loop: CPU seconds per second, over the last period
        self._calls = 0
        self.handlers = handlers
        self.path = folder / f"worker-{os.getpid()}.sock"
        self._links: dict[Path, _Link] = {}
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task | None = None
        self.meter: asyncio.Task | None = None  # keeps self.busy up to date
        self._tasks: set[asyncio.Task] = set()
        self._serving_frames: set[_Frames] = set()
        self._board: mmap.mmap | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        board = path_board(self.path)
        board.write_bytes(_BOARD.pack(0, 0.0))
        with board.open("r+b") as f:
            self._board = mmap.mmap(f.fileno(), _BOARD.size)
        self._server = await loop.create_unix_server(self._serving, self.path)
        await self._rescan()
        self._watch = asyncio.create_task(self._keep_watching())
        self.meter = asyncio.create_task(self._measure_busy())
        log.info("worker %d: sharing gRPC calls with its siblings via %s", os.getpid(), self.folder)

    async def stop(self) -> None:
        for task in (self._watch, self.meter):
            if task is not None:
                task.cancel()
        if self._server is not None:
            self._server.close()
        for link in self._links.values():
            link.close()
        # The server stops after its own in-flight calls finished; calls a sibling is
        # still waiting for end here, and that sibling answers them itself (SiblingGone).
        for task in self._tasks:
            task.cancel()
        for frames in list(self._serving_frames):
            if frames.transport is not None:
                frames.transport.close()
        for path in (self.path, path_board(self.path)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._board is not None:
            self._board.close()
            self._board = None

    def publish(self, calls: int) -> None:
        """Tell the siblings how many calls this worker holds now."""
        self._calls = calls
        if self._board is not None:
            _BOARD.pack_into(self._board, 0, calls, self.busy)

    async def _measure_busy(self) -> None:
        # The loop thread's own CPU time (this task runs on it): a loop that spends
        # nearly all of it working is the worker's bottleneck, whatever the machine does.
        loop = asyncio.get_running_loop()
        cpu, wall = time.thread_time(), loop.time()
        while True:
            await asyncio.sleep(_BUSY_PERIOD_S)
            cpu2, wall2 = time.thread_time(), loop.time()
            self.busy = (cpu2 - cpu) / max(wall2 - wall, 1e-6)
            cpu, wall = cpu2, wall2
            self.publish(self._calls)

    def pick(self, local_calls: int) -> _Link | None:
        """The sibling to hand the next call to, or None to answer it here.

        ``local_calls``: the calls this worker holds (see ``InferenceServicer``). Calls are
        handed on only while this worker's event loop is saturated (busy at least ``busy`` of
        the time): a forwarded call costs both loops more in all than answering it costs one,
        so it pays only when the accepting loop is the bottleneck and a sibling's is not
        (docs/benchmarks.md: on 2 cores shared with the client, forwarding an unsaturated
        worker's calls cost throughput). The call then goes to the sibling whose loop is less
        busy, holding the fewest calls (as published in its ``.load`` file, or handed to it and
        not yet answered, whichever is more), when that is fewer than this worker holds. So an
        idle worker answers its own call (a lone request pays no hop), and workers loaded
        evenly by their own connections do not trade calls.
        """
        if self.busy < self._busy_at:
            return None
        best, fewest = None, local_calls
        for link in self._links.values():
            if not link.up:
                continue
            calls, busy = link.load
            if busy < self.busy and (held := max(calls, len(link.pending))) < fewest:
                best, fewest = link, held
        return best

    async def ask_all(self, kind: int, payload: bytes) -> list[bytes | SiblingError]:
        """The same call to every sibling (feedback lookups): each answer or failure."""
        links = [link for link in self._links.values() if link.up]
        answers = await asyncio.gather(
            *(link.call(kind, payload, None) for link in links), return_exceptions=True
        )
        return [a for a in answers if isinstance(a, (bytes, SiblingError))]

    # --- serving a sibling's calls -------------------------------------------------------
    def _serving(self) -> _Frames:
        """The protocol of one sibling's connection: each frame answered in its own task."""

        def on_frame(call: int, kind: int, timeout: float, payload: bytes) -> None:
            task = asyncio.create_task(self._answer(frames, call, kind, timeout, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        frames = _Frames(on_frame)
        self._serving_frames.add(frames)
        frames.closed.add_done_callback(lambda _: self._serving_frames.discard(frames))
        return frames

    async def _answer(
        self, frames: _Frames, call: int, kind: int, timeout: float, payload: bytes
    ) -> None:
        handler = self.handlers.get(kind)
        try:
            if handler is None:
                raise SiblingError(12, f"unknown call kind {kind}")  # UNIMPLEMENTED
            answer, status = await handler(payload, timeout or None), OK
        except SiblingError as err:
            answer, status = err.message.encode(), err.status
        except Exception:  # the sibling gets INTERNAL; this worker keeps serving
            log.exception("a call forwarded by a sibling failed")
            answer, status = b"internal error (a bug in Visor); see the server log", 13
        if frames.transport is not None and not frames.transport.is_closing():
            frames.send(call, status, 0.0, answer)

    # --- finding siblings ----------------------------------------------------------------
    async def _keep_watching(self) -> None:
        while True:
            await asyncio.sleep(_RESCAN_S)
            try:
                await self._rescan()
            except OSError as exc:  # The folder went away: the server is stopping
                log.debug("sibling rescan failed: %s", exc)

    async def _rescan(self) -> None:
        for path in self.folder.glob("worker-*.sock"):
            if path == self.path:
                continue
            link = self._links.get(path)
            if link is not None and link.up:
                continue
            link = _Link(path)
            try:
                await link.connect()
            except OSError:
                continue  # A sibling that stopped leaves its socket file: try next time
            self._links[path] = link


def folder_from_env(workers: int) -> Path | None:
    """The folder the parent made for its workers' sockets, when this is one of several."""
    folder = os.environ.get(ENV_DIR)
    if not folder or workers < 2 or not Path(folder).is_dir():
        return None
    return Path(folder)


class SiblingFeedback:
    """Feedback for request ids the siblings answered: asked of each, and answered for them.

    ``lookup(request_id, labels, index)`` is this worker's own lookup: a result, None when it
    holds no such id, or a ``VisorError`` when it refuses the labels.
    """

    def __init__(self, siblings: Siblings, lookup: Callable[..., FeedbackResult | None]) -> None:
        self._siblings = siblings
        self._lookup = lookup

    async def ask(
        self, request_id: str, labels: list[Any], index: int | None
    ) -> FeedbackResult | None:
        payload = json.dumps({"request_id": request_id, "labels": labels, "index": index})
        refusal: SiblingError | None = None
        for answer in await self._siblings.ask_all(FEEDBACK, payload.encode()):
            if isinstance(answer, bytes):
                return FeedbackResult(**json.loads(answer))
            if answer.status != UnknownRequest.grpc_code.value[0]:
                refusal = answer  # the sibling holds the id but refused the labels
        if refusal is not None:
            raise InvalidInput(refusal.message)
        return None

    async def answer(self, payload: bytes, _timeout: float | None) -> bytes:
        """A sibling's lookup: the result as JSON, or SiblingError (never asked on)."""
        fields = json.loads(payload)
        try:
            done = self._lookup(fields["request_id"], fields["labels"], fields["index"])
        except VisorError as err:
            raise SiblingError(err.grpc_code.value[0], err.message) from None
        if done is None:
            raise SiblingError(UnknownRequest.grpc_code.value[0], "unknown request id")
        return json.dumps(dataclasses.asdict(done)).encode()


@contextlib.contextmanager
def siblings_folder(workers: int):
    """A private folder for the workers' sockets, named to them in ``VISOR_WORKERS_DIR``."""
    if workers < 2:
        yield None
        return
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="visor-workers-")
    os.chmod(folder, 0o700)
    os.environ[ENV_DIR] = folder
    try:
        yield Path(folder)
    finally:
        os.environ.pop(ENV_DIR, None)
        shutil.rmtree(folder, ignore_errors=True)
