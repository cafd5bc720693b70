"""Gather backends behind one interface (`base.GatherBackend`)."""

from __future__ import annotations

import torch

from moep_sglang.asyncep.backends.base import GatherBackend
from moep_sglang.asyncep.config import AsyncEPConfig
from moep_sglang.asyncep.group import AsyncEPGroup
from moep_sglang.asyncep.shards import ShardStore


def make_backend(config: AsyncEPConfig, group: AsyncEPGroup, shards: ShardStore,
                 device: torch.device) -> GatherBackend:
    if config.backend == "collective":
        from moep_sglang.asyncep.backends.collective import CollectiveBackend

        return CollectiveBackend(group, shards, config.ring_slots, config.offload, device)
    from moep_sglang.asyncep.backends.peer import PeerBackend

    return PeerBackend(group, shards, config.shm_dir, config.offload, device)
