"""cache_aware: the semantics of SGLang's router (sgl-router / SMG `cache_aware`).

It does not see the workers' caches: it keeps an approximate tree of the prompts it routed to
each worker (bounded, LRU-evicted), and load is in-flight requests:

    imbalanced = max_load - min_load > balance_abs_threshold (64)
                 and max_load > balance_rel_threshold (1.5) * min_load
    imbalanced                      -> least-loaded worker
    best match rate > 0.3           -> worker with the longest approximate match
    otherwise                       -> argmin_w (in_flight_w, tree_tokens_w)

SMG 1.x semantics ("pick min load instead of min tenant size"): on a weak match the worker
with the fewest requests in flight wins; among equally loaded workers the smallest tree (the
most free cache, sgl-router 0.3's whole rule) breaks the tie.
"""

from __future__ import annotations

from collections import OrderedDict

from moep_router.policies.base import RouteParams, RouteResult
from moep_router.token_trie import TokenTrie


class _ApproxTree:
    """Routed prompts of one worker, evicted oldest-first beyond max_tokens."""

    def __init__(self, max_tokens: int) -> None:
        self.trie = TokenTrie()
        self.prompts: OrderedDict[tuple[int, ...], int] = OrderedDict()  # prompt -> uses
        self.num_tokens = 0
        self.max_tokens = max_tokens

    def insert(self, tokens: tuple[int, ...]) -> None:
        if tokens in self.prompts:
            self.prompts.move_to_end(tokens)
            return
        self.prompts[tokens] = 1
        self.trie.add(list(tokens))
        self.num_tokens += len(tokens)
        while self.num_tokens > self.max_tokens and len(self.prompts) > 1:
            old, _ = self.prompts.popitem(last=False)
            self.trie.remove(list(old))
            self.num_tokens -= len(old)


class CacheAwarePolicy:
    name = "cache_aware"

    def __init__(self, cache_threshold: float = 0.3, balance_abs_threshold: int = 64,
                 balance_rel_threshold: float = 1.5, max_tree_tokens: int = 2**22) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs = balance_abs_threshold
        self.balance_rel = balance_rel_threshold
        self.max_tree_tokens = max_tree_tokens
        self._trees: dict[str, _ApproxTree] = {}

    def route(self, params: RouteParams) -> RouteResult:
        ws = params.workers
        if not ws:
            return RouteResult(None)
        loads = [w.num_inflight for w in ws]
        if max(loads) - min(loads) > self.balance_abs and max(loads) > self.balance_rel * min(loads):
            return RouteResult(min(ws, key=lambda w: (w.num_inflight, w.worker_id)).worker_id)
        matches = {w.worker_id: self._tree(w.worker_id).trie.match_len(list(params.tokens))
                   for w in ws}
        best = max(ws, key=lambda w: (matches[w.worker_id], -w.num_inflight, w.worker_id))
        if params.tokens and matches[best.worker_id] / len(params.tokens) > self.cache_threshold:
            return RouteResult(best.worker_id)
        least = min(ws, key=lambda w: (w.num_inflight, self._tree(w.worker_id).num_tokens,
                                       w.worker_id))
        return RouteResult(least.worker_id)

    def on_routed(self, worker_id, tokens) -> None:
        self._tree(worker_id).insert(tuple(tokens))

    def _tree(self, worker_id: str) -> _ApproxTree:
        if worker_id not in self._trees:
            self._trees[worker_id] = _ApproxTree(self.max_tree_tokens)
        return self._trees[worker_id]
