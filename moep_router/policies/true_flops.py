"""true_flops (default): prefix affinity where it pays, otherwise the earliest finish in true
FLOPs, and never a saturated worker.

    candidates = workers with outstanding_flops < threshold_flops          (unsaturated)
    none left  -> queue centrally (RouteResult(None)) until one frees
    Δ(w)       = true FLOPs of the request on w, discounted by w's cached prefix (cost.py)
    if max match_len >= min_match_fraction * prompt length:
               argmax over candidates of (match_len, -(outstanding_flops + Δ))   (affinity)
    else       argmin over candidates of (outstanding_flops + Δ); ties: longest match

A substantial cached prefix keeps its requests together (each further request is nearly free
there); a hot prefix spills once its worker saturates (T). A match below the fraction, such as a
short task header that every request of a family shares, does not pull requests onto one worker:
the paper's literal rule (`longest_prefix`) piles them up unless T is tuned exactly, and pure
earliest-finish balancing spreads real prefixes too thinly (bench/results/).
"""

from __future__ import annotations

from moep_router.policies.base import RouteParams, RouteResult


class TrueFlopsPolicy:
    name = "true_flops"

    def __init__(self, min_match_fraction: float = 0.3) -> None:
        self.min_match_fraction = min_match_fraction

    def route(self, params: RouteParams) -> RouteResult:
        open_ = [w for w in params.workers if w.outstanding_flops < w.threshold_flops]
        if not open_:
            return RouteResult(None)
        finish = lambda w: w.outstanding_flops + w.cost_flops  # noqa: E731
        best_match = max(w.match_len for w in open_)
        if best_match and best_match >= self.min_match_fraction * len(params.tokens):
            best = max(open_, key=lambda w: (w.match_len, -finish(w), w.worker_id))
        else:
            best = min(open_, key=lambda w: (finish(w), -w.match_len, w.worker_id))
        return RouteResult(best.worker_id)

    def on_routed(self, worker_id, tokens) -> None:
        pass
