"""The AsyncEP group: N independent SGLang workers that meet once at startup.

Rank 0 binds a TCPStore at --asyncep-store; every rank publishes its pid and host there, and the
process groups of the gather backends are formed from it (gloo on CPU, NCCL on GPU for data; a
gloo group always carries the small lockstep agreement). Nothing here is SGLang's: the workers
are separate servers, so their group is ours, separate from SGLang's own TP group.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from moep_sglang.asyncep.config import AsyncEPConfig

logger = logging.getLogger("moep_sglang.asyncep")


class AsyncEPPeerLost(RuntimeError):
    """A worker of the group exited or stopped answering; this worker cannot assemble experts."""


class AsyncEPGroup:
    def __init__(self, config: AsyncEPConfig, store: dist.Store, pids: list[int],
                 same_host: list[bool]):
        self.config = config
        self.rank = config.rank
        self.size = config.size
        self.store = store
        self.pids = pids  # pid of every rank (same host only)
        self.same_host = same_host
        self.timeout = timedelta(seconds=config.timeout_s)
        self._gloo: dist.ProcessGroup | None = None
        self.lost: AsyncEPPeerLost | None = None  # set by the watchdog when a peer exits

    # Public API ---------------------------------------------------------------------------
    @classmethod
    def join(cls, config: AsyncEPConfig) -> AsyncEPGroup:
        logger.info("AsyncEP rank %d/%d: joining group at %s", config.rank, config.size,
                    config.store)
        try:
            store = dist.TCPStore(config.store_host, config.store_port, config.size,
                                  is_master=config.rank == 0,
                                  timeout=timedelta(seconds=config.timeout_s),
                                  wait_for_workers=False)
            store = dist.PrefixStore(config.group_name, store)
            host = socket.gethostname()
            store.set(f"pid/{config.rank}", f"{os.getpid()}@{host}")
            infos = [store.get(f"pid/{r}").decode() for r in range(config.size)]
        except (RuntimeError, dist.DistError) as exc:
            role = "bind" if config.rank == 0 else "reach rank 0's store at"
            raise SystemExit(
                f"moep-sglang: AsyncEP rank {config.rank}/{config.size} could not {role} "
                f"--asyncep-store {config.store}, or not every rank joined within "
                f"--asyncep-timeout {config.timeout_s:.0f} s: start all {config.size} workers "
                f"with the same --asyncep-store and --asyncep-size ({exc})") from exc
        pids = [int(i.split("@", 1)[0]) for i in infos]
        same = [i.split("@", 1)[1] == host for i in infos]
        logger.info("AsyncEP rank %d/%d: group formed (pids %s)", config.rank, config.size, pids)
        return cls(config, store, pids, same)

    def exchange(self, key: str, value: bytes) -> list[bytes]:
        """Everyone's `value` for `key`, indexed by rank (blocks until all have set it)."""
        self.store.set(f"{key}/{self.rank}", value)
        return [self.store.get(f"{key}/{r}") for r in range(self.size)]

    def gloo(self) -> dist.ProcessGroup:
        """CPU process group of the N workers (gathers on CPU; the lockstep agreement)."""
        if self._gloo is None:
            self._gloo = dist.ProcessGroupGloo(dist.PrefixStore("gloo", self.store), self.rank,
                                               self.size, self.timeout)
        return self._gloo

    def nccl(self, device: torch.device) -> dist.ProcessGroup:
        """GPU process group for the collective backend's all-gathers."""
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = self.timeout
        pg = dist.ProcessGroupNCCL(dist.PrefixStore("nccl", self.store), self.rank, self.size,
                                   opts)
        # One warm-up collective binds the communicator to this device.
        t = torch.zeros(1, device=device)
        pg.allreduce([t]).wait()
        return pg

    def agree_any(self, mine: bool) -> bool:
        """True if any worker has work this step (all ranks call it once per scheduler step)."""
        flag = torch.tensor([1 if mine else 0], dtype=torch.int32)
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.MAX
        try:
            self.gloo().allreduce([flag], opts).wait()
        except RuntimeError as exc:
            raise self.lost_error(exc) from exc
        return bool(flag.item())

    def dead_peers(self) -> list[int]:
        """Ranks on this host whose process has exited."""
        dead = []
        for r, (pid, same) in enumerate(zip(self.pids, self.same_host)):
            if r == self.rank or not same:
                continue
            if not _alive(pid):
                dead.append(r)
        return dead

    def check_peers(self) -> None:
        dead = self.dead_peers()
        if dead:
            raise self.lost_error(None, dead)

    def start_watchdog(self, interval_s: float = 1.0) -> None:
        """Check the peers every interval from a thread; on a loss, log it and end this
        scheduler (`exit_on_lost_peer`), so an idle worker of a broken group stops too and leaves
        the router's rotation."""

        def watch() -> None:
            while self.lost is None:
                time.sleep(interval_s)
                dead = self.dead_peers()
                if dead:
                    self.lost = self.lost_error(None, dead)
                    exit_on_lost_peer(self.lost)

        threading.Thread(target=watch, name="moep-asyncep-watchdog", daemon=True).start()

    def lost_error(self, cause: BaseException | None, dead: list[int] | None = None
                   ) -> AsyncEPPeerLost:
        if dead is None:
            time.sleep(0.05)  # let a dying peer's exit become visible
            dead = self.dead_peers()
        who = (f"rank(s) {dead} (pid {[self.pids[r] for r in dead]}) exited" if dead
               else "a peer stopped answering")
        detail = f": {cause}" if cause else ""
        return AsyncEPPeerLost(
            f"AsyncEPPeerLost: AsyncEP group {self.config.store} lost a worker: {who}. Rank {self.rank} cannot "
            f"assemble its experts without the whole group; restart the group{detail}")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: existence is all we know


def exit_on_lost_peer(error: AsyncEPPeerLost) -> None:
    """Log the loss and end this scheduler process at once. SGLang's launcher sees its scheduler
    exit and shuts the server down within seconds; raising instead left the scheduler alive in
    SGLang's crash handler, and the launcher then waited 60 s for "CUDA coredumps" (seen on CPU)."""
    logger.error("%s", error)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(70)
