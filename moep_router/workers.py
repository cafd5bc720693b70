"""The worker registry: what the router knows of each worker, and nothing else."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from moep_router.cache_index import CacheIndex
from moep_router.config import WorkerSpec
from moep_router.load_board import LoadBoard, WorkerLoad
from moep_router.pending import DEFAULT_SETTLE_S, PendingPrefixes
from moep_router.policies.base import WorkerView
from moep_router.prefix_keys import PromptKeys


@dataclass
class WorkerState:
    spec: WorkerSpec
    threshold_flops: float  # T: from the worker's report, its --worker option, or the default
    index: CacheIndex = field(default_factory=CacheIndex)  # exact, from KV events
    pending: PendingPrefixes = field(default_factory=PendingPrefixes)  # routed, not yet indexed
    outstanding_flops: float = 0.0  # predicted FLOPs of unfinished requests
    num_inflight: int = 0  # unfinished requests
    healthy: bool = True  # False: skipped by routing until a health check passes
    starting: bool = False  # added, its first health check not answered: requests wait for it
    lost: bool = False  # its process was unreachable (not just slow): index reset on return
    health_failures: int = 0  # consecutive failed health checks
    last_seq: int = -1  # last KV-event sequence number applied
    num_gaps: int = 0  # KV-event gaps detected (each repaired by replay or a rebuild)
    num_failures: int = 0  # requests that failed on this worker and were retried elsewhere
    num_requests: int = 0  # requests answered by this worker
    num_checks: int = 0  # health checks passed
    threshold_source: str = "default"  # "spec" (--worker threshold=), "worker" (reported), default
    shared: WorkerLoad | None = None  # --processes N: this worker on the shared load board

    @property
    def worker_id(self) -> str:
        return self.spec.url

    def match_len(self, prompt: PromptKeys) -> int:
        return max(self.index.match_len(prompt), self.pending.match_len(prompt))

    def load(self) -> tuple[int, float]:
        """(requests, predicted FLOPs) in flight on this worker from every router process."""
        if self.shared is None:
            return self.num_inflight, self.outstanding_flops
        inflight, flops = self.shared.others()
        return self.num_inflight + inflight, self.outstanding_flops + flops

    def view(self, prompt: PromptKeys, cost_of_match) -> WorkerView:
        """What a policy sees; cost_of_match(m) prices the request given m cached tokens."""
        match = self.match_len(prompt)
        inflight, flops = self.load()
        return WorkerView(self.worker_id, match, flops, self.threshold_flops, inflight,
                          cost_of_match(match))

    def reset_index(self) -> None:
        """Relearn the index from the worker's next events (its cache is still there)."""
        self.index.clear()
        self.last_seq = -1

    def cache_lost(self) -> None:
        """The worker's cache is gone (its process died or restarted): nothing indexed or
        promised by finished requests is there any more."""
        self.reset_index()
        self.pending.forget_settling()

    # Transitions: the only writers of healthy / starting / lost / the counters below ---------
    #   added --> starting (out; requests wait) --passing check--> healthy;  --failed check--> out
    #   healthy --request failed--> out, lost (index reset now)
    #   healthy --unreachable check--> out, lost;  --MAX failed checks in a row--> out (index kept)
    #   out --passing check--> healthy (a lost worker restarted empty: its index reset again)
    def await_admission(self) -> None:
        """Just added to a running router: out of routing until its first health check passes,
        so a worker still loading, or still in SGLang's warm-up, gets no request yet."""
        self.healthy, self.starting = False, True

    def reserve(self, prompt: PromptKeys, predicted_flops: float) -> None:
        """A request was routed here: its prefix counts as cached, its FLOPs as outstanding."""
        self.pending.add(prompt)
        self.outstanding_flops += predicted_flops
        self.num_inflight += 1
        self.publish_load()

    def release(self, prompt: PromptKeys, predicted_flops: float) -> None:
        """The request finished: its FLOPs leave the load now, its prefix stays promised until
        the worker's KV events can have indexed it (pending.py)."""
        self.pending.finish(prompt)
        self.outstanding_flops = max(0.0, self.outstanding_flops - predicted_flops)
        self.num_inflight -= 1
        self.publish_load()

    def publish_load(self) -> None:
        """This process's load on the shared board (--processes N)."""
        if self.shared is not None:
            self.shared.publish(self.num_inflight, self.outstanding_flops)

    def request_failed(self) -> None:
        """A request failed here (connection lost, 5xx, timeout): out of routing until a health
        check passes; its process is presumed gone, so the index is reset."""
        self.num_failures += 1
        self.healthy = False
        self.lost = True
        self.cache_lost()

    def request_answered(self) -> None:
        self.num_requests += 1

    def check_passed(self) -> bool:
        """A health check passed. True if this re-admits the worker."""
        self.num_checks += 1
        self.health_failures = 0
        self.starting = False
        if self.healthy:
            return False
        if self.lost:
            self.cache_lost()
        self.healthy, self.lost = True, False
        return True

    def check_failed(self, unreachable: bool, max_failures: int) -> bool:
        """A health check failed (unreachable: connection refused). True if this takes the
        worker out: at once when unreachable, else after max_failures failures in a row."""
        self.health_failures += 1
        self.starting = False
        self.lost = self.lost or unreachable
        if self.healthy and (unreachable or self.health_failures >= max_failures):
            self.healthy = False
            return True
        return False

    def threshold_reported(self, threshold_flops: float) -> bool:
        """The worker reported its T (per request). True if it changed."""
        changed = threshold_flops != self.threshold_flops
        self.threshold_flops, self.threshold_source = threshold_flops, "worker"
        return changed


class WorkerRegistry:
    """Public API: add / remove / get / healthy / any_starting / all."""

    def __init__(self, default_threshold: float = math.inf, board: LoadBoard | None = None,
                 proc: int = 0, pending_settle_s: float = DEFAULT_SETTLE_S) -> None:
        self._workers: dict[str, WorkerState] = {}
        self.default_threshold = default_threshold
        self.board, self.proc = board, proc  # --processes N: the shared load, this process
        self.pending_settle_s = pending_settle_s

    def add(self, spec: WorkerSpec) -> WorkerState:
        if spec.url in self._workers:
            raise ValueError(f"worker {spec.url} is already registered")
        t = spec.threshold_flops if spec.threshold_flops is not None else self.default_threshold
        shared = WorkerLoad(self.board, self.proc, spec.url) if self.board else None
        state = WorkerState(spec, t, pending=PendingPrefixes(self.pending_settle_s),
                            threshold_source="spec" if spec.threshold_flops is not None
                            else "default", shared=shared)
        state.publish_load()  # a worker added again starts from this process's zero
        self._workers[spec.url] = state
        return state

    def remove(self, url: str) -> WorkerState:
        if url not in self._workers:
            raise KeyError(url)
        return self._workers.pop(url)

    def get(self, url: str) -> WorkerState | None:
        return self._workers.get(url)

    def healthy(self) -> list[WorkerState]:
        return [w for w in self._workers.values() if w.healthy]

    def any_starting(self) -> bool:
        """A worker awaits its first health check (requests wait for it rather than fail)."""
        return any(w.starting for w in self._workers.values())

    def all(self) -> list[WorkerState]:
        return list(self._workers.values())
