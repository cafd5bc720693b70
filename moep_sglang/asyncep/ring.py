"""The ring of S full-layer expert buffers the gather engine fills ahead of compute.

Slot s holds every expert of one MoE layer (`w13_weight` [E, 2I, H], `w2_weight` [E, H, I]); MoE
layer i (in forward order) uses slot i % S. On GPU each slot carries a `consumed` event recorded
on the compute stream after the MoE forward that read it; the gather stream waits on it before
overwriting the slot. On CPU compute is synchronous, so a slot is free once the layer returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RingSlot:
    index: int
    tensors: dict[str, torch.Tensor]  # name -> [E, ...] full expert set of one layer
    layer_idx: int = -1  # MoE layer whose experts are (being) gathered here; -1: none
    consumed: object | None = None  # torch.cuda.Event on GPU, None on CPU
    handle: object | None = field(default=None, repr=False)  # GatherHandle in flight


class ExpertRing:
    def __init__(self, num_slots: int, spec: dict[str, tuple[tuple[int, ...], torch.dtype]],
                 group_size: int, device: torch.device):
        self.device = device
        self.slots = []
        for s in range(num_slots):
            tensors = {n: torch.empty((shape[0] * group_size, *shape[1:]), dtype=dtype,
                                      device=device)
                       for n, (shape, dtype) in spec.items()}
            consumed = torch.cuda.Event() if device.type == "cuda" else None
            self.slots.append(RingSlot(s, tensors, consumed=consumed))
        if device.type == "cuda":  # pre-record so the first gathers do not wait
            for slot in self.slots:
                slot.consumed.record(torch.cuda.current_stream(device))

    def slot_for(self, moe_idx: int) -> RingSlot:
        return self.slots[moe_idx % len(self.slots)]

    @property
    def total_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.slots for t in s.tensors.values())
