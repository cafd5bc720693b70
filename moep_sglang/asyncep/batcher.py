"""Prefill-only batching: form batches of at least T FLOPs per layer when the queue allows.

With an empty running batch and no chunk in flight, the scheduler holds the waiting queue while
its FLOPs per layer (cost model of moep_router.cost, prompt tokens minus the cache hit SGLang has
already matched) are below T, for at most --max-batch-wait-ms from the first held step; then it
releases whatever is queued. T is --min-batch-flops if given, else AsyncEP's measured T; without
either the policy is off and SGLang's own scheduling runs unchanged.
"""

from __future__ import annotations

import time
from collections import deque

from moep_sglang.asyncep import metrics, runtime


class BatchPolicy:
    def __init__(self):
        self.hold_since: float | None = None
        self.batches = 0  # prefill batches formed
        self.below_threshold = 0  # batches released below T by the wait bound
        self.held_steps = 0  # scheduler steps that held the queue
        self.recent: deque[dict] = deque(maxlen=64)  # last batches: tokens, flops, T

    # Public API ---------------------------------------------------------------------------
    def threshold(self) -> float | None:
        eng = runtime.engine()
        if eng is not None:
            return eng.threshold.flops
        config = runtime.batching_config()
        return config.min_batch_flops if config else None

    def should_hold(self, scheduler, running_batch) -> bool:
        t = self.threshold()
        cost = runtime.cost_model()
        if not t or cost is None or scheduler.chunked_req is not None:
            return False
        if not running_batch.is_empty() or not scheduler.waiting_queue:
            return False
        queued = sum(cost.flops_per_layer(len(r.origin_input_ids), len(r.prefix_indices))
                     for r in scheduler.waiting_queue)
        now = time.perf_counter()
        if queued >= t:
            self.hold_since = None
            return False
        if self.hold_since is None:
            self.hold_since = now
        if (now - self.hold_since) * 1e3 >= self._max_wait_ms():
            self.hold_since = None
            return False
        self.held_steps += 1
        metrics.observe_hold()
        return True

    def record(self, batch) -> None:
        cost = runtime.cost_model()
        if cost is None or not batch.forward_mode.is_extend():
            return
        extend = batch.extend_lens or [r.extend_range.length for r in batch.reqs]
        prefix = batch.prefix_lens or [len(r.prefix_indices) for r in batch.reqs]
        tokens = int(sum(extend))
        flops = sum(cost.flops_per_layer(p + e, p) for e, p in zip(extend, prefix))
        t = self.threshold()
        self.batches += 1
        if t and flops < t:
            self.below_threshold += 1
        self.recent.append({"tokens": tokens, "requests": len(batch.reqs),
                            "flops_per_layer": flops, "threshold_flops": t})
        metrics.observe_batch(tokens, flops, t)

    def report(self) -> dict:
        return {"threshold_flops": self.threshold(), "max_wait_ms": self._max_wait_ms(),
                "batches": self.batches, "batches_below_threshold": self.below_threshold,
                "held_steps": self.held_steps, "recent_batches": list(self.recent)}

    @staticmethod
    def _max_wait_ms() -> float:
        config = runtime.batching_config()
        return config.max_wait_ms if config else 50.0


_policy = BatchPolicy()


def policy() -> BatchPolicy:
    return _policy
