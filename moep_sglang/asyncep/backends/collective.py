"""`collective`: all-gather of every rank's shard into a ring slot (gloo on CPU, NCCL on GPU).

All ranks must issue identical gathers in the same order, so the group steps in lockstep: the
engine agrees once per scheduler step whether anyone has work, and a rank with none runs a
gather-only step (see `moep_sglang.asyncep.lockstep`).
With hybrid offload the shard lives in (pinned) host memory and is first copied to a per-slot
device staging buffer, then gathered: t_gather is the slower of the two channels.
Every tensor is gathered as its bytes (a uint8 view): gloo has no float8 type, and an all-gather
is a copy, so FP8 weights and their float32 scales travel like any other tensor.
"""

from __future__ import annotations

import time

import torch

from moep_sglang.asyncep.backends.base import CpuHandle, GatherBackend, GatherHandle
from moep_sglang.asyncep.group import AsyncEPGroup
from moep_sglang.asyncep.ring import RingSlot
from moep_sglang.asyncep.shards import ShardStore


class CollectiveBackend(GatherBackend):
    name = "collective"
    lockstep = True

    def __init__(self, group: AsyncEPGroup, shards: ShardStore, num_slots: int, offload: bool,
                 device: torch.device):
        super().__init__(group, shards, device)
        self.pg = group.nccl(device) if self.on_gpu else group.gloo()
        self.offload = offload
        self.staging: list[dict[str, torch.Tensor]] = []
        if offload:
            if self.on_gpu:
                shards.relocate(lambda i, n, t: t.to("cpu").pin_memory())
            self.staging = [{n: torch.empty(shape, dtype=dtype, device=device)
                             for n, (shape, dtype) in shards.spec().items()}
                            for _ in range(num_slots)]

    def start(self, moe_idx: int, slot: RingSlot) -> GatherHandle:
        if self.on_gpu:
            return self._start_gpu(moe_idx, slot)
        started = time.perf_counter()
        works = [self.pg._allgather_base(_bytes(slot.tensors[name]),
                                         _bytes(self._source(moe_idx, slot, name)))
                 for name in self.shards.names]
        handle = CpuHandle([w.wait for w in works], started, self.group.lost_error)
        try:
            works[-1].get_future().add_done_callback(
                lambda _: handle.finished_at(time.perf_counter()))
        except (RuntimeError, AttributeError):
            pass  # no future on this backend: the wait time stands in for the gather time
        return handle

    def _source(self, moe_idx: int, slot: RingSlot, name: str) -> torch.Tensor:
        shard = self.shards.layers[moe_idx].tensors[name]  # [E/N, ...]
        if not self.offload:
            return shard
        staged = self.staging[slot.index][name]
        staged.copy_(shard, non_blocking=self.on_gpu)  # host store -> device staging
        return staged

    def _start_gpu(self, moe_idx: int, slot: RingSlot) -> GatherHandle:
        def fill() -> None:
            works = [self.pg._allgather_base(_bytes(slot.tensors[n]),
                                             _bytes(self._source(moe_idx, slot, n)))
                     for n in self.shards.names]
            for w in works:
                w.wait()  # the gather stream waits for NCCL's stream (no host block)

        return self._on_gather_stream(slot, fill)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """[E', A, B] of any dtype -> [E', A, B * itemsize] uint8, the same memory."""
    return t.view(torch.uint8)
