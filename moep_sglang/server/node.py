"""`moep-sglang serve`: one command for a node. Its workers, `moep-router` in front, supervision.

One worker per visible GPU (on CPU: `--workers N`), either full replicas or one AsyncEP group of
all of them; ports wired deterministically from `--worker-base-port` so a router elsewhere (or a
Kubernetes pod annotation) can name them:

    worker i: HTTP   base + i
              KV events   base + 1000 + 2i  (their replay socket: + 1)
    AsyncEP rendezvous store: base + 999 (rank 0 binds it)
    SGLang's torch.distributed port of worker i: base + 2000 + i

Failure domains are groups: a replica is a group of one, an AsyncEP group is one group (a lost
rank stops its peers: README "Failures"). The supervisor polls every process; when one exits, its
whole group is stopped and started again (with a back-off after failed starts) while the router
takes its workers out (unreachable) and, once they answer, back in with empty cache indexes. An
accepted request on a worker that died is retried by the router on another worker. SIGTERM or
Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from moep_sglang.server.router_process import RouterProcess, RouterStartError
from moep_sglang.server.worker_process import (
    WorkerConfig,
    WorkerProcess,
    WorkerStartError,
    connect_host,
    stop_all,
)

KV_PORT_OFFSET = 1000  # worker i publishes KV events on base + 1000 + 2i (replay: + 1)
STORE_PORT_OFFSET = 999  # AsyncEP's rendezvous store
NCCL_PORT_OFFSET = 2000  # worker i's torch.distributed port: base + 2000 + i (a random one could
# land on another worker's port in the block)
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class NodeConfig:
    model_path: Path
    num_workers: int  # one per GPU (default: every visible GPU); on CPU, as given
    mode: str  # "replicas" | "asyncep"
    asyncep_backend: str  # "peer" | "collective" (mode asyncep)
    on_gpu: bool
    router_port: int  # HTTP port of moep-router
    router_host: str  # its bind address
    worker_base_port: int
    workers_only: bool  # no router here (a router elsewhere lists the printed --worker SPECs)
    log_dir: Path
    ready_timeout_s: float  # per group start
    worker_args: tuple[str, ...] = ()  # more SGLang / launcher flags for every worker
    router_args: tuple[str, ...] = ()  # more moep-router flags
    cpu_threads: int | None = None  # torch threads per CPU worker
    worker_host: str = "127.0.0.1"  # workers' bind address (0.0.0.0 for a router elsewhere)

    def worker_port(self, i: int) -> int:
        return self.worker_base_port + i

    def kv_port(self, i: int) -> int:
        return self.worker_base_port + KV_PORT_OFFSET + 2 * i

    def store(self) -> str:
        return f"127.0.0.1:{self.worker_base_port + STORE_PORT_OFFSET}"

    def worker_specs(self, host: str | None = None) -> list[str]:
        """The router's --worker SPEC of each worker, as reached at `host` (default: from this
        machine)."""
        host = host or connect_host(self.worker_host)
        return [f"http://{host}:{self.worker_port(i)},kv=tcp://{host}:{self.kv_port(i)}"
                for i in range(self.num_workers)]

    def advertised_host(self) -> str:
        """How other machines reach the workers: their bind address, or this host's name when
        they bind every interface."""
        import socket

        if self.worker_host in ("0.0.0.0", "::"):
            return socket.getfqdn()
        return connect_host(self.worker_host)

    def groups(self) -> list[tuple[int, ...]]:
        """Worker indexes per failure domain."""
        if self.mode == "asyncep":
            return [tuple(range(self.num_workers))]
        return [(i,) for i in range(self.num_workers)]

    def worker_config(self, i: int) -> WorkerConfig:
        args = list(self.worker_args)
        args += ["--nccl-port", str(self.worker_base_port + NCCL_PORT_OFFSET + i)]
        if self.on_gpu:
            args += ["--base-gpu-id", str(i)]  # refused in --worker-arg (parse_node_args)
        if self.mode == "asyncep":
            args += ["--asyncep-size", str(self.num_workers), "--asyncep-rank", str(i),
                     "--asyncep-store", self.store(), "--asyncep-backend", self.asyncep_backend]
        return WorkerConfig(self.model_path, self.worker_port(i), self.log_dir / f"worker{i}.log",
                            kv_events_port=self.kv_port(i), cpu_threads=self.cpu_threads,
                            extra_args=tuple(args), host=self.worker_host)


def visible_gpus() -> int:
    """GPUs this node has (nvidia-smi -L; CUDA_VISIBLE_DEVICES narrows it), without torch."""
    import os

    if os.environ.get("MOEP_FORCE_CPU") == "1" or shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def block_ports(base: int, num_workers: int) -> list[int]:
    """Every port the workers of a --worker-base-port block bind: HTTP, the store, KV events
    and their replay, NCCL."""
    return [*range(base, base + num_workers), base + STORE_PORT_OFFSET,
            *range(base + KV_PORT_OFFSET, base + KV_PORT_OFFSET + 2 * num_workers),
            *range(base + NCCL_PORT_OFFSET, base + NCCL_PORT_OFFSET + num_workers)]


def free_base_port(num_workers: int) -> int:
    """A --worker-base-port whose every port (HTTP, KV events and replay, store, NCCL) is free
    now, not handed out before by this process (free_port), and below the ephemeral range
    (tests and the demo, which must not collide with anything)."""
    import random
    import socket

    from moep_sglang.server.worker_process import _HANDED_OUT, _PORT_RANGE

    low, high = _PORT_RANGE
    for _ in range(100):
        base = random.randrange(low, max(low + 1, high - NCCL_PORT_OFFSET - num_workers))
        ports = block_ports(base, num_workers)
        if _HANDED_OUT.intersection(ports):  # promised already (the demo's router port was
            continue  # once worker 1's NCCL port: free then, bound by the router later)
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        _HANDED_OUT.update(ports)  # never handed out again by free_port (router, NCCL, ...)
        return base
    raise RuntimeError("no free block of ports for the workers")


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-path", required=True, type=Path)
    p.add_argument("--workers", type=int, default=None,
                   help="workers to start (default: one per visible GPU; on CPU: 1)")
    p.add_argument("--mode", choices=["auto", "replicas", "asyncep"], default="auto",
                   help="replicas: full copies; asyncep: one AsyncEP group of all workers "
                        "(experts sharded 1/N); auto: asyncep on 2+ GPUs, else replicas")
    p.add_argument("--asyncep-backend", choices=["peer", "collective"], default="peer")
    p.add_argument("--port", type=int, default=8000, help="moep-router's HTTP port")
    p.add_argument("--host", default="127.0.0.1", help="moep-router's bind address")
    p.add_argument("--worker-base-port", type=int, default=30000,
                   help="worker i serves on BASE+i, KV events on BASE+1000+2i")
    p.add_argument("--workers-only", action="store_true",
                   help="start no router; print the --worker SPECs for a router elsewhere")
    p.add_argument("--worker-host", default="127.0.0.1",
                   help="the workers' HTTP bind address (0.0.0.0 where a router elsewhere "
                        "reaches them; their KV events always bind every interface)")
    p.add_argument("--log-dir", type=Path, default=Path("logs/moep-serve"))
    p.add_argument("--ready-timeout-s", type=float, default=900.0,
                   help="seconds a group may take to serve its first request")
    p.add_argument("--cpu-threads", type=int, default=None, help="torch threads per CPU worker")
    p.add_argument("--worker-arg", action="append", default=[], metavar="FLAG",
                   help="one more flag for every worker (repeat; FLAG=VALUE form)")
    p.add_argument("--router-arg", action="append", default=[], metavar="FLAG",
                   help="one more moep-router flag (repeat; FLAG=VALUE form)")
    p.set_defaults(func=lambda a: run_node(parse_node_args(a)))


def parse_node_args(a: argparse.Namespace, gpus: int | None = None) -> NodeConfig:
    gpus = visible_gpus() if gpus is None else gpus
    if not (a.model_path / "config.json").exists():
        raise SystemExit(f"moep-sglang serve: --model-path {a.model_path}: no config.json there")
    n = a.workers if a.workers is not None else max(gpus, 1)
    if n < 1:
        raise SystemExit("moep-sglang serve: --workers must be >= 1")
    if gpus and n > gpus:
        raise SystemExit(f"moep-sglang serve: --workers {n}, but this node has {gpus} GPU(s)")
    mode = a.mode if a.mode != "auto" else ("asyncep" if gpus >= 2 and n >= 2 else "replicas")
    if mode == "asyncep" and n < 2:
        raise SystemExit("moep-sglang serve: --mode asyncep needs 2 or more workers")
    owned = [f for f in ("--base-gpu-id", "--port", "--host", "--kv-events-port",
                         "--model-path", "--nccl-port") if any(x == f or x.startswith(f + "=")
                                                for x in a.worker_arg)]
    if owned:
        raise SystemExit(f"moep-sglang serve: --worker-arg {owned[0]} is set by serve itself "
                         "(GPU i per worker, ports from --worker-base-port)")
    if not 1024 <= a.worker_base_port <= 65535 - NCCL_PORT_OFFSET - n:
        raise SystemExit("moep-sglang serve: --worker-base-port leaves no room for the workers")
    return NodeConfig(a.model_path, n, mode, a.asyncep_backend, gpus > 0, a.port, a.host,
                      a.worker_base_port, a.workers_only, a.log_dir, a.ready_timeout_s,
                      tuple(a.worker_arg), tuple(a.router_arg), a.cpu_threads, a.worker_host)


@dataclass
class WorkerGroup:
    """One failure domain: its workers start, serve and are restarted together."""
    indexes: tuple[int, ...]
    workers: list[WorkerProcess] = field(default_factory=list)
    restarts: int = 0
    failed_starts: int = 0
    next_start: float = 0.0  # monotonic time of the next start attempt

    @property
    def name(self) -> str:
        return "worker " + ",".join(map(str, self.indexes))

    def start(self, config: NodeConfig) -> None:
        """Start every worker of the group and wait until each serves. Raises WorkerStartError
        (the group is stopped again)."""
        self.workers = []
        try:
            for i in self.indexes:  # tracked one by one: an interrupt leaves none unstopped
                self.workers.append(WorkerProcess(config.worker_config(i)))
                self.workers[-1].start()
            for w in self.workers:
                w.wait_ready(config.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.failed_starts = 0

    def dead(self) -> list[int]:
        """Indexes of workers whose process has exited."""
        return [i for i, w in zip(self.indexes, self.workers) if not w.alive()]

    def start_failed(self, now: float) -> float:
        """Back-off before the next attempt, in seconds."""
        self.failed_starts += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** self.failed_starts)
        self.next_start = now + delay
        return delay

    def stop(self) -> None:
        stop_all(self.workers)
        self.workers = []


class Node:
    """The node's processes. start(): every group, then the router; supervise_once(): restart
    what died; stop(): everything."""

    def __init__(self, config: NodeConfig, log=print) -> None:
        self.config = config
        self.groups = [WorkerGroup(g) for g in config.groups()]
        self.router: RouterProcess | None = None
        self._log = log

    def start(self) -> None:
        c = self.config
        self._log(f"starting {c.num_workers} {'GPU' if c.on_gpu else 'CPU'} worker(s) as "
                  f"{c.mode}{' (' + c.asyncep_backend + ')' if c.mode == 'asyncep' else ''}; "
                  f"logs in {c.log_dir}")
        for g in self.groups:
            g.start(c)
            self._announce(g)
        if not c.workers_only:
            self.router = RouterProcess(c.model_path, c.worker_specs(), c.log_dir / "router.log",
                                        *c.router_args, port=c.router_port, host=c.router_host)
            self.router.start(timeout_s=120, wait_healthy=True)

    def ready_message(self) -> str:
        if self.router is None:
            specs = " ".join(f"--worker {s}" for s in
                             self.config.worker_specs(self.config.advertised_host()))
            return f"workers ready; for a router elsewhere: moep-router {specs}"
        return f"ready: moep-router on http://{self.config.router_host}:{self.config.router_port}"

    def supervise_once(self) -> None:
        if self.router is not None and not self.router.alive():
            self._log("moep-router exited; restarting it")
            try:
                self.router.start(timeout_s=120)
            except RouterStartError as exc:
                self._log(f"moep-router restart failed ({str(exc)[:200]}); retrying")
        now = time.monotonic()
        for g in self.groups:
            if g.workers:
                dead = g.dead()
                if not dead:
                    continue
                self._log(f"{g.name}: worker(s) {dead} exited; restarting the group")
                g.stop()
                g.restarts += 1
            if now < g.next_start:
                continue
            try:
                g.start(self.config)
            except WorkerStartError as exc:
                delay = g.start_failed(time.monotonic())
                self._log(f"{g.name}: restart failed ({str(exc).splitlines()[0]}); "
                          f"next try in {delay:.0f} s")
                continue
            self._announce(g, restarted=True)

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
            self.router = None
        for g in self.groups:
            g.stop()

    def _announce(self, g: WorkerGroup, restarted: bool = False) -> None:
        for i, w in zip(g.indexes, g.workers):
            self._log(f"worker {i} {'restarted' if restarted else 'serving'} (pid {w.pid}) on "
                      f"{w.config.url}, kv events tcp://127.0.0.1:{w.config.kv_events_port}")


def run_node(config: NodeConfig, poll_s: float = 1.0) -> None:
    """Start, report ready, supervise until SIGTERM / SIGINT, stop everything. The first signal
    interrupts whatever runs (a start included); later ones are ignored, so the cleanup runs
    to its end."""
    state = {"signalled": False, "ready": False}

    def on_signal(*_) -> None:
        if not state["signalled"]:
            state["signalled"] = True
            raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    node = Node(config, log=lambda m: print(f"moep-serve: {m}", flush=True))
    try:
        node.start()
        state["ready"] = True
        print(f"moep-serve: {node.ready_message()}", flush=True)
        while True:
            time.sleep(poll_s)
            node.supervise_once()
    except (WorkerStartError, RouterStartError) as exc:
        print(f"moep-serve: did not start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    except KeyboardInterrupt:
        if not state["ready"]:
            raise SystemExit(130)  # stopped before it was ready
    finally:
        print("moep-serve: stopping", flush=True)
        node.stop()
        print("moep-serve: stopped", flush=True)
