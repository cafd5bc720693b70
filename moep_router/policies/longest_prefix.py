"""longest_prefix: the paper's frontend rule, literally.

    candidates = workers with outstanding_flops < threshold_flops   (unsaturated)
    none left  -> queue centrally until one frees
    choose     argmax over candidates of (match_len, -outstanding_flops)

It depends on T: with T too high every request sharing even a short header lands on one worker.
"""

from __future__ import annotations

from moep_router.policies.base import RouteParams, RouteResult


class LongestPrefixPolicy:
    name = "longest_prefix"

    def route(self, params: RouteParams) -> RouteResult:
        open_ = [w for w in params.workers if w.outstanding_flops < w.threshold_flops]
        if not open_:
            return RouteResult(None)
        best = max(open_, key=lambda w: (w.match_len, -w.outstanding_flops, w.worker_id))
        return RouteResult(best.worker_id)

    def on_routed(self, worker_id, tokens) -> None:
        pass
