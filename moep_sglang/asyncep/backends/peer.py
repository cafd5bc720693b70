"""`peer`: one-sided reads of the peers' shards; no lockstep, an idle rank does nothing.

CPU: each rank moves its shards into one file in shared memory (`--asyncep-shm-dir`, /dev/shm),
every peer maps it once at startup, and the owner unlinks the file once all have mapped it (the
mappings stay valid; nothing leaks if a worker is killed later). A background thread copies the
peers' experts of a layer into a ring slot.
GPU: CUDA IPC handles of every shard tensor are exchanged once at startup; a dedicated stream
copies peer device memory into the slot (copy engines over NVLink, no SMs). With hybrid offload the
node's whole expert store sits in shared host memory registered as pinned, and each GPU copies
the layer host-to-device.
Liveness: a peer's death is checked (pid) before each step; see `AsyncEPGroup.check_peers`.
"""

from __future__ import annotations

import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from moep_sglang.asyncep.backends.base import CpuHandle, GatherBackend, GatherHandle
from moep_sglang.asyncep.group import AsyncEPGroup
from moep_sglang.asyncep.ring import RingSlot
from moep_sglang.asyncep.shards import ShardStore

_ALIGN = 64


class PeerBackend(GatherBackend):
    name = "peer"
    lockstep = False

    def __init__(self, group: AsyncEPGroup, shards: ShardStore, shm_dir: str, offload: bool,
                 device: torch.device):
        super().__init__(group, shards, device)
        self.per_rank = shards.spec()[shards.names[0]][0][0]  # E/N experts per rank
        self.host_views = not self.on_gpu or offload
        if self.host_views:
            # views[rank][layer][name] -> [E/N, ...] in shared host memory
            self.views = _share_through_files(group, shards, Path(shm_dir), pin=self.on_gpu)
        else:
            self.views = _share_through_cuda_ipc(group, shards, device)
        if not self.on_gpu:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="moep-asyncep-gather")

    def start(self, moe_idx: int, slot: RingSlot) -> GatherHandle:
        if self.on_gpu:
            return self._start_gpu(moe_idx, slot)
        started = time.perf_counter()
        handle = CpuHandle([], started, self.group.lost_error)
        future = self.pool.submit(self._copy_layer, moe_idx, slot, False)
        future.add_done_callback(lambda _: handle.finished_at(time.perf_counter()))
        handle._waits = [future.result]
        return handle

    def _copy_layer(self, moe_idx: int, slot: RingSlot, non_blocking: bool) -> None:
        for rank, layers in enumerate(self.views):
            start = rank * self.per_rank
            for name, src in layers[moe_idx].items():  # src [E/N, ...]
                slot.tensors[name][start:start + self.per_rank].copy_(src,
                                                                      non_blocking=non_blocking)

    def _start_gpu(self, moe_idx: int, slot: RingSlot) -> GatherHandle:
        return self._on_gather_stream(slot, lambda: self._copy_layer(moe_idx, slot, True))

    def close(self) -> None:
        if not self.on_gpu:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _layout(shards: ShardStore) -> tuple[list[dict[str, int]], int]:
    """Byte offset of every (layer, name) shard in a rank's file, and the file size."""
    offsets, pos = [], 0
    for shard in shards.layers:
        row = {}
        for name, t in shard.tensors.items():
            row[name] = pos
            pos += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
        offsets.append(row)
    return offsets, pos


def _view(buf: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    nbytes = like.numel() * like.element_size()
    return buf[offset:offset + nbytes].view(like.dtype).view(like.shape)


def _map(path: Path, size: int, pin: bool) -> torch.Tensor:
    buf = torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8)  # [size] bytes
    if pin:  # page-lock the mapping so host-to-device copies run asynchronously
        torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), size, 0)
    return buf


def _share_through_files(group: AsyncEPGroup, shards: ShardStore, shm_dir: Path, pin: bool
                         ) -> list[list[dict[str, torch.Tensor]]]:
    offsets, size = _layout(shards)
    path = shm_dir / f"{group.config.group_name}-r{group.rank}-{os.getpid()}"
    with open(path, "wb") as f:
        f.truncate(size)
    own = _map(path, size, pin)
    shards.relocate(lambda i, n, t: _view(own, offsets[i][n], t).copy_(t))
    paths = [p.decode() for p in group.exchange("peer/files", str(path).encode())]
    views = []
    for rank, peer_path in enumerate(paths):
        buf = own if rank == group.rank else _map(Path(peer_path), size, pin)
        views.append([{n: _view(buf, offsets[i][n], t) for n, t in shard.tensors.items()}
                      for i, shard in enumerate(shards.layers)])
    group.exchange("peer/mapped", b"1")  # every rank holds every mapping now
    path.unlink(missing_ok=True)
    return views


def _share_through_cuda_ipc(group: AsyncEPGroup, shards: ShardStore, device: torch.device
                            ) -> list[list[dict[str, torch.Tensor]]]:
    from torch.multiprocessing.reductions import reduce_tensor

    # One-time startup exchange through the group's store: CUDA IPC handles are opaque bytes
    # produced by torch; pickle is confined to this handshake, never used on a request path.
    mine = [{n: reduce_tensor(t) for n, t in shard.tensors.items()} for shard in shards.layers]
    blobs = group.exchange("peer/ipc", pickle.dumps(mine))
    views = []
    for rank, blob in enumerate(blobs):
        if rank == group.rank:
            views.append([dict(shard.tensors) for shard in shards.layers])
            continue
        layers = pickle.loads(blob)
        with torch.cuda.device(device):
            views.append([{n: fn(*args) for n, (fn, args) in row.items()} for row in layers])
    group.exchange("peer/mapped", b"1")
    return views
