"""The gather engine: keeps the ring K layers ahead of compute during every forward.

Step protocol (one step = one forward over all L MoE layers, or a gather-only step):
    begin_step      issue gathers of MoE layers 0..K-1 into their slots
    before_moe(i)   wait for slot(i) "ready" (stall = time compute waits), bind the full experts
    after_moe(i)    record slot(i) "consumed", rebind the shard, issue the gather of layer i+K
Every step issues gathers 0..L-1 in order, so a gather-only step on an idle rank matches a busy
rank's forward exactly (the collective backend's lockstep).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from moep_sglang.asyncep import metrics
from moep_sglang.asyncep.backends.base import GatherBackend
from moep_sglang.asyncep.config import AsyncEPConfig
from moep_sglang.asyncep.group import AsyncEPGroup
from moep_sglang.asyncep.ring import ExpertRing
from moep_sglang.asyncep.shards import ShardStore
from moep_sglang.asyncep.threshold import Threshold

logger = logging.getLogger("moep_sglang.asyncep")

_STALL_REPORTED_S = 50e-6  # a wait longer than this counts as a stall


@dataclass
class EngineStats:
    steps: int = 0  # forwards (with compute) the engine served
    gather_only_steps: int = 0  # lockstep steps without local work
    gathers: int = 0
    gather_seconds: float = 0.0  # sum of measured gather durations
    stall_seconds: float = 0.0  # compute waiting for weights
    stalled_layers: int = 0  # MoE layers whose weights were not ready in time
    bytes_gathered: int = 0  # bytes received from peers
    flops: float = 0.0  # FLOPs of the forwards served (cost model)
    tokens: int = 0  # tokens of the forwards served
    last_step: dict = field(default_factory=dict)

    def report(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class GatherEngine:
    def __init__(self, config: AsyncEPConfig, group: AsyncEPGroup, shards: ShardStore,
                 backend: GatherBackend, ring: ExpertRing, threshold: Threshold,
                 device: torch.device):
        self.config = config
        self.group = group
        self.shards = shards
        self.backend = backend
        self.ring = ring
        self.threshold = threshold
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.num_layers = len(shards.layers)
        self.lookahead = min(config.lookahead, self.num_layers)
        self._index = {id(s.layer): i for i, s in enumerate(shards.layers)}
        self.stats = EngineStats()
        self._in_step = False
        self._next_moe = 0  # MoE layer the current step expects next
        self._step: dict = {}
        self._unresolved: list[tuple[str, object, object]] = []  # GPU events read lazily

    # Public API ---------------------------------------------------------------------------
    def manages(self, layer: torch.nn.Module) -> bool:
        return id(layer) in self._index

    def begin_step(self, flops_per_layer: float = 0.0, tokens: int = 0) -> None:
        if self._in_step:  # the previous forward raised mid-way: drain what it issued
            self._drain()
        if not self.backend.lockstep:
            self.group.check_peers()
        self._resolve_gpu_timings()
        self._in_step, self._next_moe = True, 0
        self._step = {"flops_per_layer": flops_per_layer, "tokens": tokens, "stall_s": 0.0,
                      "started": time.perf_counter(), "gather_only": tokens == 0,
                      "handles": []}
        for i in range(self.lookahead):
            self._issue(i)

    def before_moe(self, layer: torch.nn.Module) -> None:
        i = self._index[id(layer)]
        if not self._in_step or i != self._next_moe:
            if i != 0:
                raise RuntimeError(f"AsyncEP: MoE layer {i} ran out of order (expected "
                                   f"{self._next_moe}); every forward must run all MoE layers")
            self.begin_step()
        slot = self.ring.slot_for(i)
        self._timed_wait(slot.handle)
        for name, full in slot.tensors.items():  # [E, ...]
            getattr(layer, name).data = full

    def after_moe(self, layer: torch.nn.Module) -> None:
        i = self._index[id(layer)]
        slot = self.ring.slot_for(i)
        if self.on_gpu:
            slot.consumed.record(torch.cuda.current_stream(self.device))
        for name, shard in self.shards.layers[i].tensors.items():
            getattr(layer, name).data = shard
        self._next_moe = i + 1
        if i + self.lookahead < self.num_layers:
            self._issue(i + self.lookahead)
        if i == self.num_layers - 1:
            self._end_step()

    def gather_only_step(self) -> None:
        """Run the same gathers as a forward, without compute (an idle rank in lockstep)."""
        self.begin_step()
        for shard in self.shards.layers:
            self.before_moe(shard.layer)
            self.after_moe(shard.layer)

    def calibration_gather(self) -> None:
        """One complete gather of layer 0 into slot 0 (all ranks call it together)."""
        slot = self.ring.slot_for(0)
        handle = self.backend.start(0, slot)
        handle.wait()
        if self.on_gpu:
            slot.consumed.record(torch.cuda.current_stream(self.device))

    def report(self) -> dict:
        return {
            "rank": self.group.rank, "size": self.group.size, "backend": self.backend.name,
            "ring_slots": len(self.ring.slots), "lookahead": self.lookahead,
            "moe_layers": self.num_layers, "offload": self.config.offload,
            "shard_bytes": self.shards.total_bytes, "ring_bytes": self.ring.total_bytes,
            "bytes_received_per_layer": self.backend.bytes_received_per_layer(),
            **self.threshold.report(), **self.stats.report(),
        }

    # Internals ----------------------------------------------------------------------------
    def _issue(self, i: int) -> None:
        slot = self.ring.slot_for(i)
        slot.layer_idx = i
        slot.handle = self.backend.start(i, slot)
        self._step["handles"].append(slot.handle)

    def _timed_wait(self, handle) -> None:
        if self.on_gpu:
            before, after = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            before.record()
            handle.wait()
            after.record()
            self._unresolved.append(("stall", before, after))
            return
        start = time.perf_counter()
        handle.wait()
        self._add_stall(time.perf_counter() - start)

    def _add_stall(self, seconds: float) -> None:
        self.stats.stall_seconds += seconds
        self._step["stall_s"] = self._step.get("stall_s", 0.0) + seconds
        if seconds > _STALL_REPORTED_S:
            self.stats.stalled_layers += 1
        metrics.observe_stall(seconds)

    def _end_step(self) -> None:
        step, self._in_step = self._step, False
        wall = time.perf_counter() - step["started"]
        received = self.backend.bytes_received_per_layer() * self.num_layers
        self.stats.bytes_gathered += received
        self.stats.gathers += self.num_layers
        for h in step["handles"]:
            self._observe_gather(h)
        if step["gather_only"]:
            self.stats.gather_only_steps += 1
        else:
            self.stats.steps += 1
            self.stats.tokens += step["tokens"]
            self.stats.flops += step["flops_per_layer"] * self.num_layers
            if not self.on_gpu:  # GPU compute time is not known without a sync; skip it
                compute = max(wall - step["stall_s"], 0.0) / self.num_layers
                self.threshold.observe_forward(step["flops_per_layer"], compute)
        self.stats.last_step = {"wall_s": wall, "stall_s": step["stall_s"],
                                "tokens": step["tokens"],
                                "flops_per_layer": step["flops_per_layer"]}
        metrics.observe_step(step, received, self.threshold.flops)

    def _observe_gather(self, handle) -> None:
        seconds = handle.seconds()
        if seconds is None:
            self._unresolved.append(("gather", handle, None))
            return
        self.stats.gather_seconds += seconds
        self.threshold.observe_gather(seconds)
        metrics.observe_gather(seconds)

    def _resolve_gpu_timings(self) -> None:
        pending, self._unresolved = self._unresolved, []
        for kind, a, b in pending:
            if kind == "gather":
                self._observe_gather(a)
            elif b.query():
                self._add_stall(a.elapsed_time(b) / 1e3)
            else:
                self._unresolved.append((kind, a, b))

    def _drain(self) -> None:
        for h in self._step.get("handles", []):
            h.wait()
        self._in_step = False
        logger.warning("AsyncEP: a forward ended before its last MoE layer; drained its gathers")
