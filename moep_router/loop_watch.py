"""How long the router's event loop could not run: its lag and the garbage collector's pauses.

Every request of a router process is served by one asyncio loop, so anything that holds the loop
(a collection of a large heap, a slow callback) delays every request in flight at once. A tail in
the router's added latency with an idle CPU is one of those, and these two series say which:

- `moep_router_event_loop_lag_seconds`: a tick scheduled every `TICK_S` woke up this late. The
  lag of a tick is  lag = t_woken - (t_slept + TICK_S),  so a loop held for h seconds shows a
  tick with lag ~h.
- `moep_router_gc_pause_seconds{generation}`: the wall time of each collection (gc.callbacks).
  A collection runs inside whatever allocated, on the loop's thread, so it is a loop stall too.

The GC callback only appends to a plain list: it may run inside any allocation, including one
made while a metric's lock is held (prometheus_client's multiprocess values share one lock), so
it must not touch a metric. The tick moves those pauses into the histogram on the loop.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

TICK_S = 0.01  # the lag tick's period (s)


async def sample_lag(observe: Callable[[float], None], tick_s: float = TICK_S) -> None:
    """Until cancelled: sleep tick_s, then observe how late the loop woke (s, >= 0). Also the
    benchmark's probe of its own sender (bench/router_latency.py)."""
    while True:
        slept = time.perf_counter()
        await asyncio.sleep(tick_s)
        observe(max(0.0, time.perf_counter() - slept - tick_s))


class LoopWatch:
    """Samples the loop's lag and times every collection, into two histograms of a
    RouterMetrics (`loop_lag`, `gc_pause`). start() on the loop; stop() before it closes."""

    def __init__(self, metrics) -> None:
        self._metrics = metrics
        self._gc_started = 0.0  # perf_counter at the running collection's start
        self._pauses: list[tuple[int, float]] = []  # (generation, s), not yet observed
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.flush()

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._pauses.append((info["generation"], time.perf_counter() - self._gc_started))

    def flush(self) -> None:
        """Observe the pauses recorded since the last flush (on the loop, never inside GC)."""
        pauses, self._pauses = self._pauses, []
        for generation, seconds in pauses:
            self._metrics.gc_pause.labels(str(generation)).observe(seconds)

    async def _tick(self) -> None:
        await sample_lag(self._observe_lag)

    def _observe_lag(self, lag_s: float) -> None:
        self._metrics.loop_lag.observe(lag_s)
        if self._pauses:
            self.flush()
