"""The in-flight load of every worker, summed over the router's processes (`--processes N`).

Each router process routes on its own exact copy of every worker's cache index (it subscribes
to every worker's KV events itself), but a worker's load is the sum of what all N processes
sent it. The board is one shared-memory block that every process maps:

    keys[slot]              int64    hash of a worker URL; 0: a free slot      [MAX_WORKERS]
    load[proc][slot][0]     float64  requests in flight from process `proc`    [N][MAX_WORKERS][2]
    load[proc][slot][1]     float64  predicted FLOPs in flight from `proc`

Invariants: only process p writes load[p] (one writer per cell: no lock; an aligned 8-byte
store is atomic on x86-64 and aarch64, so a reader sees an old or a new value, never a torn
one); a slot's key, once set, never changes (a worker removed and added again gets its old
slot back). Keys are claimed under the lock the parent hands every process (rare: a worker is
added). A process that died is restarted with its row zeroed first: its requests died with it.

    others(slot) = sum over q != p of load[q][slot]      (what the other processes sent)
"""

from __future__ import annotations

import hashlib
from multiprocessing import shared_memory

MAX_WORKERS = 1024  # slots: workers ever registered during the router's life


def url_key(url: str) -> int:
    """A non-zero signed 64-bit key for a worker URL (0 marks a free slot)."""
    key = int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "little",
                         signed=True)
    return key or 1


class LoadBoard:
    """Created once by the parent (create), attached by each router process (attach)."""

    def __init__(self, shm: shared_memory.SharedMemory, num_procs: int, lock, owner: bool) -> None:
        self._shm = shm
        self.num_procs = num_procs
        self._lock = lock
        self._owner = owner
        buf = shm.buf
        self._keys = buf[:8 * MAX_WORKERS].cast("q")
        self._load = buf[8 * MAX_WORKERS:8 * MAX_WORKERS * (1 + 2 * num_procs)].cast("d")

    @staticmethod
    def size(num_procs: int) -> int:
        return 8 * MAX_WORKERS * (1 + 2 * num_procs)

    @classmethod
    def create(cls, num_procs: int, lock) -> LoadBoard:
        shm = shared_memory.SharedMemory(create=True, size=cls.size(num_procs))
        shm.buf[:cls.size(num_procs)] = bytes(cls.size(num_procs))
        return cls(shm, num_procs, lock, owner=True)

    @classmethod
    def attach(cls, name: str, num_procs: int, lock) -> LoadBoard:
        return cls(_attach(name), num_procs, lock, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    def close(self) -> None:
        self._keys.release()
        self._load.release()
        self._shm.close()
        if self._owner:
            self._shm.unlink()

    # Slots --------------------------------------------------------------------------------
    def slot(self, url: str) -> int:
        """The worker's slot, claimed on first use (linear probing from the key's hash)."""
        key = url_key(url)
        start = key % MAX_WORKERS
        with self._lock:
            for i in range(MAX_WORKERS):
                s = (start + i) % MAX_WORKERS
                if self._keys[s] == key:
                    return s
                if self._keys[s] == 0:
                    self._keys[s] = key
                    return s
        raise RuntimeError(f"more than {MAX_WORKERS} workers registered over the router's life")

    # Loads ----------------------------------------------------------------------------------
    def publish(self, proc: int, slot: int, inflight: int, flops: float) -> None:
        base = 2 * (proc * MAX_WORKERS + slot)
        self._load[base] = float(inflight)
        self._load[base + 1] = flops

    def others(self, proc: int, slot: int) -> tuple[int, float]:
        """(requests, FLOPs) in flight on this worker from every process but `proc`."""
        inflight = flops = 0.0
        for q in range(self.num_procs):
            if q != proc:
                base = 2 * (q * MAX_WORKERS + slot)
                inflight += self._load[base]
                flops += self._load[base + 1]
        return int(inflight), flops

    def clear_process(self, proc: int) -> None:
        """Zero a dead process's row (before it is started again)."""
        for i in range(2 * proc * MAX_WORKERS, 2 * (proc + 1) * MAX_WORKERS):
            self._load[i] = 0.0


def _attach(name: str) -> shared_memory.SharedMemory:
    """Map the parent's block without registering it with the resource tracker (the spawned
    processes share the parent's tracker, which would otherwise unlink the block when one of
    them exits, or complain at the parent's unlink)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        from multiprocessing import resource_tracker

        register = resource_tracker.register
        resource_tracker.register = lambda n, rtype: (  # noqa: E731
            None if rtype == "shared_memory" else register(n, rtype))
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register


class WorkerLoad:
    """One worker's entry on the board, as one process sees it."""

    def __init__(self, board: LoadBoard, proc: int, url: str) -> None:
        self.board, self.proc, self.slot = board, proc, board.slot(url)

    def publish(self, inflight: int, flops: float) -> None:
        self.board.publish(self.proc, self.slot, inflight, flops)

    def others(self) -> tuple[int, float]:
        return self.board.others(self.proc, self.slot)
