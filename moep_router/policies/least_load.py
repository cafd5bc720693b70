"""least_load: the worker with the fewest in-flight requests (ties: fewest outstanding FLOPs)."""

from __future__ import annotations

from moep_router.policies.base import RouteParams, RouteResult


class LeastLoadPolicy:
    name = "least_load"

    def route(self, params: RouteParams) -> RouteResult:
        if not params.workers:
            return RouteResult(None)
        best = min(params.workers,
                   key=lambda w: (w.num_inflight, w.outstanding_flops, w.worker_id))
        return RouteResult(best.worker_id)

    def on_routed(self, worker_id, tokens) -> None:
        pass
