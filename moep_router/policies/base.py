"""The routing-policy interface: pure decisions over a snapshot of the workers, no I/O.

Its records are frozen msgspec structs, not dataclasses: the router builds one WorkerView per
worker per request, and a struct is built in 0.08 us against 0.8 for a frozen dataclass.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class WorkerView(msgspec.Struct, frozen=True):
    worker_id: str  # registry key (the worker's URL)
    match_len: int  # prompt tokens cached or pending on this worker (exact, from KV events)
    outstanding_flops: float  # FLOPs routed there and not finished
    threshold_flops: float  # saturation threshold T (inf: never saturated)
    num_inflight: int  # requests routed there and not finished
    cost_flops: float = 0.0  # true FLOPs this request would cost there (given match_len)


class RouteParams(msgspec.Struct, frozen=True):
    tokens: tuple[int, ...]  # the prompt's shared prefix (the whole prompt for one item)
    workers: tuple[WorkerView, ...]  # healthy workers only


class RouteResult(msgspec.Struct, frozen=True):
    worker_id: str | None  # None: every worker is saturated; queue centrally and retry


class Policy(Protocol):
    name: str

    def route(self, params: RouteParams) -> RouteResult: ...

    def on_routed(self, worker_id: str, tokens: tuple[int, ...]) -> None:
        """Called once the request is sent (policies with their own state update it here)."""
        ...
