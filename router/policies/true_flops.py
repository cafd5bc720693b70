"""true_flops (default; the paper's frontend, done exactly):

    candidates = workers with outstanding_flops < threshold_flops      (unsaturated)
    none left  -> queue centrally (RouteResult(None)) until one frees
    choose     argmax over candidates of (match_len, -outstanding_flops)

match_len comes from the worker's exact cache index plus its pending prefixes; outstanding FLOPs
are true, cache-discounted FLOPs (router/cost.py). A hot prefix spills to the next-best worker
once its owner saturates; with no match anywhere the least-loaded worker wins.
"""

from __future__ import annotations

from moep_router.policies.base import RouteParams, RouteResult


class TrueFlopsPolicy:
    name = "true_flops"

    def route(self, params: RouteParams) -> RouteResult:
        open_ = [w for w in params.workers if w.outstanding_flops < w.threshold_flops]
        if not open_:
            return RouteResult(None)
        best = max(open_, key=lambda w: (w.match_len, -w.outstanding_flops, w.worker_id))
        return RouteResult(best.worker_id)

    def on_routed(self, worker_id, tokens) -> None:
        pass
