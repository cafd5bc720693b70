"""round_robin: the next healthy worker in turn, ignoring cache and load."""

from __future__ import annotations

from moep_router.policies.base import RouteParams, RouteResult


class RoundRobinPolicy:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def route(self, params: RouteParams) -> RouteResult:
        if not params.workers:
            return RouteResult(None)
        ids = sorted(w.worker_id for w in params.workers)
        choice = ids[self._next % len(ids)]
        self._next += 1
        return RouteResult(choice)

    def on_routed(self, worker_id, tokens) -> None:
        pass
