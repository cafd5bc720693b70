"""This worker's expert shards, one entry per MoE layer, and where they live.

After SGLang loads the model, every sharded FusedMoE layer holds only experts [r*E/N, (r+1)*E/N)
in its expert tensors (`w13_weight` [E/N, 2I, H], `w2_weight` [E/N, H, I], biases if any; for
block FP8 also the float32 scales `w13_weight_scale_inv` [E/N, 2I/128, H/128] and
`w2_weight_scale_inv` [E/N, H/128, I/128], which travel with their weights). The
store keeps references to them; the backends read them (collective: as all-gather inputs; peer:
through shared memory or CUDA IPC), and `relocate` moves them into shared or pinned host memory
without keeping a second copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EXPERT_TENSOR_NAMES = ("w13_weight", "w2_weight", "w13_weight_bias", "w2_weight_bias",
                       "w13_weight_scale_inv", "w2_weight_scale_inv")  # every [E, ...] tensor


@dataclass
class LayerShard:
    layer: torch.nn.Module  # the FusedMoE layer (its expert tensors are the shard)
    tensors: dict[str, torch.Tensor]  # name -> [E/N, ...] this rank's experts


class ShardStore:
    def __init__(self, layers: list[torch.nn.Module]):
        self.layers = [
            LayerShard(layer, {n: getattr(layer, n).data for n in EXPERT_TENSOR_NAMES
                               if getattr(layer, n, None) is not None})
            for layer in layers
        ]
        first = self.layers[0].tensors
        for shard in self.layers[1:]:
            shapes = {n: (t.shape, t.dtype) for n, t in shard.tensors.items()}
            if shapes != {n: (t.shape, t.dtype) for n, t in first.items()}:
                raise ValueError("AsyncEP needs every MoE layer to have the same expert shapes")

    @property
    def names(self) -> list[str]:
        return list(self.layers[0].tensors)

    def spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """name -> (shard shape, dtype); identical for every layer."""
        return {n: (tuple(t.shape), t.dtype) for n, t in self.layers[0].tensors.items()}

    @property
    def bytes_per_layer(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers[0].tensors.values())

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_layer * len(self.layers)

    def relocate(self, allocate: Callable[[int, str, torch.Tensor], torch.Tensor]) -> None:
        """Move every shard tensor into `allocate(layer_idx, name, tensor)` (which returns the
        new home, same shape, already filled) and rebind the layer's parameter to it."""
        for i, shard in enumerate(self.layers):
            for name, tensor in list(shard.tensors.items()):
                home = allocate(i, name, tensor)
                getattr(shard.layer, name).data = home
                shard.tensors[name] = home
