"""true_flops (default): price the request in true FLOPs on every worker, send it where it
finishes first, among the workers that are not saturated.

    candidates = workers with outstanding_flops < threshold_flops          (unsaturated)
    none left  -> queue centrally (RouteResult(None)) until one frees
    Δ(w)       = true FLOPs of the request on w, discounted by w's cached prefix (cost.py)
    choose     argmin over candidates of (outstanding_flops(w) + Δ(w)); ties: longest match

A cached prefix lowers Δ(w), so requests follow their prefix as long as that worker is not so
loaded that another would finish them sooner; a hot prefix therefore spills by itself. The
paper's literal rule (longest match first, load only as a tie-break) is `longest_prefix`: with a
short common header (a task instruction) every request of a family matches one worker and it
piles up there unless T is tuned exactly (bench/results/compare_routers_table2.json).
"""

from __future__ import annotations

from moep_router.policies.base import RouteParams, RouteResult


class TrueFlopsPolicy:
    name = "true_flops"

    def route(self, params: RouteParams) -> RouteResult:
        open_ = [w for w in params.workers if w.outstanding_flops < w.threshold_flops]
        if not open_:
            return RouteResult(None)
        best = min(open_, key=lambda w: (w.outstanding_flops + w.cost_flops, -w.match_len,
                                         w.worker_id))
        return RouteResult(best.worker_id)

    def on_routed(self, worker_id, tokens) -> None:
        pass
