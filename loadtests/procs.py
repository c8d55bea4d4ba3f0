"""Start the servers under test on loopback, wait until they are ready, watch their CPU and memory.

Shared by ``loadtests.loadtest`` (``make loadtest``) and ``loadtests.bench`` (``make bench``).
Every server is its own process group, started here and stopped here (SIGTERM, then SIGKILL after
a grace period), so nothing outlives a run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def grpc_model_ready(port: int, model: str, timeout: float = 1.0) -> bool:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pbg

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        try:
            if not stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout).ready:
                return False
            return stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=timeout).ready
        except grpc.RpcError:
            return False


@dataclass
class Server:
    """A server process (group) we started; ``cold_start_s`` is process start → ready."""

    name: str
    popen: subprocess.Popen
    started: float
    log_path: Path
    http_port: int | None = None
    grpc_port: int | None = None
    cold_start_s: float | None = None
    extra: dict = field(default_factory=dict)

    def port_for(self, target: str) -> int | None:
        """The port a load-client target (``loadtests.client.TARGETS``) talks to."""
        return self.grpc_port if target.startswith("grpc") else self.http_port

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def memory_mb(self, procs: list[psutil.Process] | None = None) -> dict:
        """Memory of the whole process tree in MB: RSS summed over the processes (pages shared
        between them counted in each), PSS (shared pages split between the processes sharing
        them: what the tree costs the machine) and USS (pages of one process only)."""
        rss = pss = uss = 0
        for proc in self.processes() if procs is None else procs:
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            uss += getattr(info, "uss", info.rss)
        return {"rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "uss_mb": uss / 2**20}

    def memory_by_process(self) -> list[dict]:
        """Each process of the tree: its command line (shortened), threads and RSS/PSS/USS in MB."""
        out = []
        for proc in self.processes():
            try:
                info, cmd = proc.memory_full_info(), " ".join(proc.cmdline()[1:4])
                threads = proc.num_threads()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out.append(
                {
                    "pid": proc.pid,
                    "cmd": cmd,
                    "threads": threads,
                    "rss_mb": info.rss / 2**20,
                    "pss_mb": getattr(info, "pss", info.rss) / 2**20,
                    "uss_mb": getattr(info, "uss", info.rss) / 2**20,
                }
            )
        return out

    def cpu_s(self, procs: list[psutil.Process] | None = None) -> tuple[float, float]:
        """CPU seconds of the whole tree, and of its main threads (in a Visor worker, its loop).

        The loop's CPU per request moves less with the machine's other load than requests/s
        do, which makes it the steadier figure for comparing two versions of the request path.
        """
        total = loop = 0.0
        for proc in self.processes() if procs is None else procs:
            try:
                t, threads = proc.cpu_times(), proc.threads()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system
            loop += sum(t.user_time + t.system_time for t in threads if t.id == proc.pid)
        return total, loop

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> float:
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}; see {self.log_path}:\n"
                    + tail(self.log_path)
                )
            if check():
                self.cold_start_s = time.monotonic() - self.started
                return self.cold_start_s
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(
            f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}:\n"
            + tail(self.log_path)
        )

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_argv(
    target: str,
    port: int,
    model: str,
    payloads: Path,
    concurrency: int,
    duration: float,
    **options: object,
) -> list[str]:
    """``python -m loadtests.client`` for one load point; ``options`` become ``--name value``."""
    argv = [sys.executable, "-m", "loadtests.client", "--target", target, "--port", str(port)]
    argv += ["--model", model, "--payloads", str(payloads)]
    argv += ["--concurrency", str(concurrency), "--duration", str(duration)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def spawn(name: str, argv: list[str], env: dict, log_path: Path, cwd: Path = ROOT) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        started = time.monotonic()
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches BentoML's workers too
        )
    return Server(name, popen, started, log_path)


def visor_env(protocol: str, device: str = "cpu", extra: dict | None = None) -> dict:
    """Settings for a benchmark server: loopback, no hot-reload polling, the provider asked for."""
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    env = {
        "VISOR_HOST": LOOPBACK,
        "VISOR_PROTOCOL": protocol,
        "VISOR_POLL_INTERVAL_S": "0",
        "VISOR_PROVIDERS": json.dumps([provider]),
        "VISOR_REQUIRE_PROVIDER": "true",
        "VISOR_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


def start_visor(
    models: Path,
    model: str,
    log_path: Path,
    protocol: str = "both",
    device: str = "cpu",
    env: dict | None = None,
    ready_timeout: float = 120.0,
    tree: Path = ROOT,
) -> Server:
    """``python -m service serve`` on free loopback ports; returns once ``model`` is ready.

    ``tree``: the checkout whose ``service`` package runs (``python -m`` puts the working
    directory first on ``sys.path``), e.g. a ``git worktree`` of another commit.
    """
    http_port, grpc_port = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--models",
        str(Path(models).resolve()),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]
    server = spawn("visor", argv, visor_env(protocol, device, env), log_path, cwd=tree)
    server.http_port, server.grpc_port = http_port, grpc_port
    if protocol in ("both", "grpc"):
        check = lambda: grpc_model_ready(grpc_port, model)
    else:
        check = lambda: http_ok(f"http://{LOOPBACK}:{http_port}/v2/models/{model}/ready")
    if protocol == "both":
        grpc_check = check
        check = lambda: (
            grpc_check() and http_ok(f"http://{LOOPBACK}:{http_port}/v2/models/{model}/ready")
        )
    server.wait_ready(check, ready_timeout)
    return server


class ResourceSampler:
    """Samples a server's tree CPU time and memory every ``period`` s in a thread.

    ``cpu_cores(t0, t1)`` is the server's CPU use between two ``time.time()`` stamps (a client's
    measurement window), ``loop_cores(t0, t1)`` that of its main threads (the event loops);
    ``peak(t0, t1)`` its peak memory in that span. ``idle_cores`` and ``steal_cores`` are the
    whole machine's: cores nobody used (a saturated closed loop should leave none), and time
    the hypervisor gave to other guests (neighbours, when the hypervisor reports it).
    """

    def __init__(self, server: Server, period: float = 0.2) -> None:
        self.server, self.period = server, period
        # epoch, cpu_s, rss, pss, loop cpu_s, machine idle_s, machine steal_s
        self.samples: list[tuple[float, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        # NOTE: one walk of the process tree per sample: the sampler shares the cores it measures
        procs = self.server.processes()
        mem = self.server.memory_mb(procs)
        cpu, loop = self.server.cpu_s(procs)
        machine = psutil.cpu_times()
        self.samples.append(
            (
                time.time(),
                cpu,
                mem["rss_mb"],
                mem["pss_mb"],
                loop,
                machine.idle + getattr(machine, "iowait", 0.0),
                getattr(machine, "steal", 0.0),
            )
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def cpu_cores(self, t0: float, t1: float) -> float:
        return self._rate(1, t0, t1)

    def loop_cores(self, t0: float, t1: float) -> float:
        return self._rate(4, t0, t1)

    def idle_cores(self, t0: float, t1: float) -> float:
        return self._rate(5, t0, t1)

    def steal_cores(self, t0: float, t1: float) -> float:
        return self._rate(6, t0, t1)

    def _rate(self, column: int, t0: float, t1: float) -> float:
        import numpy as np

        if len(self.samples) < 2 or t1 <= t0:
            return float("nan")
        t = np.array([s[0] for s in self.samples])
        cpu = np.array([s[column] for s in self.samples])
        return float((np.interp(t1, t, cpu) - np.interp(t0, t, cpu)) / (t1 - t0))

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> dict:
        span = [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]
        return {"rss_mb": max(s[2] for s in span), "pss_mb": max(s[3] for s in span)}

    def __enter__(self) -> Self:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


def commit_of(tree: Path) -> str:
    """The short commit of the checkout at ``tree`` ('' when it is not a git checkout)."""
    git = ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, check=False, capture_output=True, text=True).stdout.strip()


def add_run_args(p: argparse.ArgumentParser, kind: str) -> None:
    """The options every recorded run (soak, overload) takes: model, checkout, outputs."""
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--model", default="digits")
    p.add_argument("--tree", type=Path, default=ROOT, help="checkout whose server runs")
    p.add_argument("--commit", help="what --tree holds, when it is not a git checkout")
    p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results")
    p.add_argument("--docs", type=Path, help=f"markdown file whose {kind} block to rewrite")


def start_run(args: argparse.Namespace, kind: str, argv: list[str] | None) -> tuple[dict, Path]:
    """A recorded run's header (stamp, commit, model, command) and its payload folder."""
    from loadtests.payloads import make_payloads, read_input_shape

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = args.out / f"{kind}-{stamp}" / "payloads"
    payloads = make_payloads(read_input_shape(args.models, args.model), folder)
    command = f"python -m loadtests.{kind} " + " ".join(sys.argv[1:] if argv is None else argv)
    commit = args.commit or commit_of(args.tree) or str(args.tree)
    return {"stamp": stamp, "commit": commit, "model": args.model, "command": command}, payloads


def finish_run(args: argparse.Namespace, kind: str, run: dict, block: str, heading: str) -> None:
    """Write the run's JSON, print its Markdown block, and put the block in ``--docs``."""
    from loadtests.report import update_block

    out = args.out / f"{kind}-{run['stamp']}.json"
    out.write_text(json.dumps(run, indent=1))
    print(block)
    print(f"{kind}: wrote {out}")
    if args.docs:
        update_block(args.docs, kind, block, heading)
