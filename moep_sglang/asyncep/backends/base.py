"""One interface for every gather backend: start a layer's gather, wait for it, time it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from moep_sglang.asyncep.group import AsyncEPGroup
from moep_sglang.asyncep.ring import RingSlot
from moep_sglang.asyncep.shards import ShardStore


class GatherHandle(ABC):
    """A layer's gather in flight."""

    @abstractmethod
    def wait(self) -> None:
        """CPU: block until the slot is filled. GPU: make the compute stream wait (no host sync)."""

    @abstractmethod
    def seconds(self) -> float | None:
        """Measured gather duration once known (None while in flight)."""


class GatherBackend(ABC):
    name: str = ""
    lockstep: bool = False  # True: every rank must issue the same gathers in the same order

    def __init__(self, group: AsyncEPGroup, shards: ShardStore, device: torch.device):
        self.group = group
        self.shards = shards
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.on_gpu else None  # the gather stream

    @abstractmethod
    def start(self, moe_idx: int, slot: RingSlot) -> GatherHandle:
        """Begin assembling MoE layer `moe_idx`'s full expert set into `slot` (non-blocking)."""

    def bytes_received_per_layer(self) -> int:
        """Bytes this rank receives from peers per layer gather ((N-1)/N of a layer)."""
        return self.shards.bytes_per_layer * (self.group.size - 1)

    def close(self) -> None:
        pass

    def _on_gather_stream(self, slot: RingSlot, fill: Callable[[], None]) -> GatherHandle:
        """GPU: run `fill()` (which enqueues the slot's copies or collectives) on the gather
        stream, after the slot's previous layer is consumed, bracketed by timing events."""
        started = torch.cuda.Event(enable_timing=True)
        ready = torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(slot.consumed)
            started.record(self.stream)
            fill()
            ready.record(self.stream)
        return CudaHandle(started, ready)


class CpuHandle(GatherHandle):
    """Completion of CPU work (gloo Works or a thread's Future), timed from the issue."""

    def __init__(self, waits: list[Callable[[], None]], started: float,
                 on_error: Callable[[BaseException], BaseException]):
        self._waits = waits
        self._started = started
        self._on_error = on_error
        self._seconds: float | None = None

    def wait(self) -> None:
        try:
            for w in self._waits:
                w()
        except RuntimeError as exc:
            raise self._on_error(exc) from exc
        if self._seconds is None:
            self._seconds = time.perf_counter() - self._started
        self._waits = []

    def finished_at(self, when: float) -> None:
        """Completion time observed by a callback (a tighter gather time than `wait`'s)."""
        self._seconds = when - self._started

    def seconds(self) -> float | None:
        return self._seconds


class CudaHandle(GatherHandle):
    """A gather on the gather stream, bracketed by two CUDA events."""

    def __init__(self, started, ready):
        self._started = started  # torch.cuda.Event recorded on the gather stream before copying
        self._ready = ready  # torch.cuda.Event recorded after the slot is complete

    def wait(self) -> None:
        torch.cuda.current_stream().wait_event(self._ready)

    def seconds(self) -> float | None:
        if not self._ready.query():
            return None
        return self._started.elapsed_time(self._ready) / 1e3
