"""`moep-router --processes N`: N router processes behind one port, and their supervisor.

Every process is a whole router (moep_router/server.py): its own HTTP listener on the shared
port (SO_REUSEPORT: the kernel spreads connections over the processes), its own KV-event
subscription to every worker (a ZMQ PUB reaches every subscriber, so each process's cache
indexes are exact), its own health checks. What they share:
  - in-flight load per worker, on the LoadBoard (moep_router/load_board.py), so N processes do
    not each fill a worker to its threshold;
  - workers added or removed at run time (POST/DELETE /workers): the process that took the
    call tells this supervisor, which tells the others (and replays the changes to a process it
    restarts);
  - metrics: prometheus_client's multiprocess mode, so /metrics from any process sums them all.
The ZMQ fast path (`--zmq-port`) is served by process 0 only (a ZMQ port binds once).
The supervisor restarts a process that dies (its row of the board zeroed first) and stops them
all on SIGTERM / SIGINT.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from moep_router.config import RouterConfig
from moep_router.discovery import Change  # a change of the worker set, as SPEC texts
from moep_router.load_board import LoadBoard

logger = logging.getLogger("moep_router.processes")

RESTART_BACKOFF_S = 1.0


@dataclass
class ProcessSlot:
    """What the supervisor holds of one router process."""
    index: int
    proc: mp.Process | None = None
    conn: Connection | None = None  # the supervisor's end of the pipe to it
    ready: object = None  # mp.Event set once it listens


@dataclass(frozen=True)
class SharedContext:
    """What a router process gets from the supervisor (picklable: sent to spawned children)."""
    index: int  # 0..N-1
    num_procs: int
    board_name: str
    lock: object  # mp.Lock of the board's slot table
    conn: Connection  # its end of the pipe to the supervisor
    ready: object  # mp.Event

    def attach_board(self) -> LoadBoard:
        return LoadBoard.attach(self.board_name, self.num_procs, self.lock)


class PeerLink:
    """A router process's side of the pipe: announce its worker changes, hear the others'."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()

    def announce(self, change: Change) -> None:
        with self._send_lock:
            self._conn.send(change)

    def listen(self, on_change) -> threading.Thread:
        """on_change(Change) for every change another process made, on a daemon thread
        (the caller hops onto its event loop); when the supervisor goes, this process stops."""
        def run() -> None:
            while True:
                try:
                    change = self._conn.recv()
                except (EOFError, OSError):
                    # The supervisor is gone (stopped, or killed without stopping us): stop
                    # too, rather than hold the port alone.
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                on_change(change)

        thread = threading.Thread(target=run, name="moep-peer-link", daemon=True)
        thread.start()
        return thread


def _child(config: RouterConfig, shared: SharedContext) -> None:
    from moep_router.server import run_router_process

    run_router_process(config, shared)


class Supervisor:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.n = config.processes
        self.ctx = mp.get_context("spawn")
        self.lock = self.ctx.Lock()
        self.board = LoadBoard.create(self.n, self.lock)
        self.slots = [ProcessSlot(i) for i in range(self.n)]
        self.changes: list[Change] = []  # run-time changes so far, replayed on restart
        self.stopping = False

    def start(self, timeout_s: float = 120) -> None:
        for slot in self.slots:
            self._spawn(slot)
        deadline = time.monotonic() + timeout_s
        for slot in self.slots:
            while not slot.ready.wait(0.2):
                if self.stopping:
                    return
                if not slot.proc.is_alive():
                    raise RuntimeError(f"router process {slot.index} exited at start "
                                       f"(code {slot.proc.exitcode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"router process {slot.index} not listening after "
                                       f"{timeout_s:.0f} s")

    def _spawn(self, slot: ProcessSlot) -> None:
        mine, theirs = self.ctx.Pipe(duplex=True)
        slot.conn, slot.ready = mine, self.ctx.Event()
        shared = SharedContext(slot.index, self.n, self.board.name, self.lock, theirs,
                               slot.ready)
        slot.proc = self.ctx.Process(target=_child, args=(self.config, shared),
                                     name=f"moep-router-{slot.index}", daemon=False)
        slot.proc.start()
        theirs.close()
        for change in self.changes:  # a restarted process learns the run-time changes
            slot.conn.send(change)

    def serve_forever(self) -> None:
        """Relay worker changes between processes; restart a process that died."""
        while not self.stopping:
            conns = {s.conn: s for s in self.slots if s.conn is not None}
            sentinels = {s.proc.sentinel: s for s in self.slots if s.proc is not None}
            for ready in wait([*conns, *sentinels], timeout=1.0):
                if self.stopping:
                    break
                if ready in conns:
                    self._relay(conns[ready])
                elif ready in sentinels:
                    self._restart(sentinels[ready])

    def _relay(self, source: ProcessSlot) -> None:
        try:
            change = source.conn.recv()
        except (EOFError, OSError):
            source.conn = None  # it died: its sentinel says so next
            return
        self.changes.append(change)
        for slot in self.slots:
            if slot is not source and slot.conn is not None:
                try:
                    slot.conn.send(change)
                except OSError:
                    pass  # that one is dying; it gets the whole list when restarted

    def _restart(self, slot: ProcessSlot) -> None:
        code = slot.proc.exitcode
        slot.proc.join()
        if slot.conn is not None:
            slot.conn.close()
            slot.conn = None
        if self.stopping:
            return
        logger.warning("router process %d exited (code %s); restarting it", slot.index, code)
        self.board.clear_process(slot.index)  # its requests died with it
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(slot.proc.pid)  # its live gauges leave the sums
        time.sleep(RESTART_BACKOFF_S)
        self._spawn(slot)

    def stop(self, timeout_s: float = 20) -> None:
        self.stopping = True
        for slot in self.slots:
            if slot.proc is not None and slot.proc.is_alive():
                slot.proc.terminate()  # SIGTERM: each stops its listener, then its router
        deadline = time.monotonic() + timeout_s
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.join(max(0.1, deadline - time.monotonic()))
                if slot.proc.is_alive():
                    slot.proc.kill()
                    slot.proc.join()
        self.board.close()


def run_router_processes(config: RouterConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s")
    metrics_dir = tempfile.mkdtemp(prefix="moep-router-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned processes
    supervisor = Supervisor(config)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        supervisor.stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        supervisor.start()
        if not supervisor.stopping:  # a signal during the start: no ready line, just stop
            print(f"moep-router ready on http://{config.host}:{config.port} "
                  f"({config.processes} processes)", flush=True)
            supervisor.serve_forever()
    finally:
        supervisor.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
