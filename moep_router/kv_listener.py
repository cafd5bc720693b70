"""One task per worker: apply its KV events to its CacheIndex, exactly, and repair gaps.

A gap (sequence number jumped) is repaired from the worker's replay socket when it still holds
the missing batches; otherwise the index is cleared and relearned from new events (the worker's
cache is then only under-reported, never over-reported). A sequence that goes backwards means
the worker restarted: its cache is empty, so is the index.
"""

from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio

from moep_router.messages import (
    END_SEQ,
    AllBlocksCleared,
    BlockStored,
    KVEvent,
    decode_event,
    decode_event_batch,
    split_event_batch,
)
from moep_router.workers import WorkerState

logger = logging.getLogger("moep_router.kv")


def apply_event(state: WorkerState, event: KVEvent) -> None:
    index = state.index
    if type(event) is BlockStored:
        index.apply_stored(event.block_hashes, event.parent_block_hash, event.token_ids,
                           event.block_size)
    elif type(event) is AllBlocksCleared:
        index.clear()
    else:
        index.apply_removed(event.block_hashes)


def apply_batch(state: WorkerState, seq: int, payload: bytes) -> None:
    for event in decode_event_batch(payload):
        apply_event(state, event)
    state.last_seq = seq


# Blocks applied between two turns of the event loop: a prefill step of 32K tokens is 32K blocks
# at page size 1 (~80 ms to apply on the 2-core machine, bench/kv_apply.py); in slices of 1,024
# (~2.5 ms) requests are routed in between. A worker with the moep plugin sends one event per
# radix node (thousands of blocks), so an event is applied in slices too: its blocks form a
# chain, and a slice's first block is the child of the previous slice's last. The index then
# holds a prefix of the batch, i.e. the worker's cache as it was at some point in the event
# order: it may under-report for a moment, never over-report.
APPLY_SLICE_BLOCKS = 1024
# An encoded block takes about 10 bytes or more (a 64-bit hash is 9 bytes in msgpack; a stored
# block adds its token ids), so a payload below APPLY_SLICE_BLOCKS x this holds about a slice of
# blocks or fewer and is applied at once.
MIN_BLOCK_BYTES = 10


async def apply_batch_sliced(state: WorkerState, seq: int, payload: bytes,
                             slice_blocks: int = APPLY_SLICE_BLOCKS) -> None:
    """apply_batch, yielding to the event loop after every slice_blocks blocks."""
    if len(payload) < slice_blocks * MIN_BLOCK_BYTES:  # about a slice or less: at once
        apply_batch(state, seq, payload)
        return
    budget = slice_blocks  # blocks left to apply before the next yield
    for raw in split_event_batch(payload):
        event = decode_event(raw)
        if event is None:
            continue
        if type(event) is BlockStored and len(event.block_hashes) > budget:
            budget = await _apply_chain_sliced(state, event, budget, slice_blocks)
        else:
            apply_event(state, event)
            budget -= max(1, len(getattr(event, "block_hashes", ())))
        if budget <= 0:
            await asyncio.sleep(0)
            budget = slice_blocks
    state.last_seq = seq


async def _apply_chain_sliced(state: WorkerState, event: BlockStored, budget: int,
                              slice_blocks: int) -> int:
    """One long BlockStored (a radix node's chain of blocks) in chained slices, the first
    filling what is left of `budget`, the rest slice_blocks long with a yield before each;
    returns the budget left after the last slice."""
    hashes, tokens, bs = event.block_hashes, event.token_ids, event.block_size
    parent, start = event.parent_block_hash, 0
    while start < len(hashes):
        if budget <= 0:
            await asyncio.sleep(0)
            budget = slice_blocks
        end = min(start + budget, len(hashes))
        state.index.apply_stored(hashes[start:end], parent, tokens[start * bs:end * bs], bs)
        parent = hashes[end - 1]
        budget -= end - start
        start = end
    return budget


class KVListener:
    def __init__(self, ctx: zmq.asyncio.Context, state: WorkerState, on_gap=None) -> None:
        self.ctx = ctx
        self.state = state
        self.on_gap = on_gap or (lambda state: None)  # metrics callback
        self.synced = asyncio.Event()  # set once the startup replay has been applied
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.state.spec.kv_endpoint)
        try:
            try:
                await self._replay(0)  # learn what the worker cached before we connected
            finally:
                self.synced.set()
            while True:
                topic, seq_bytes, payload = await sub.recv_multipart()
                try:
                    await self._receive(int.from_bytes(seq_bytes, "big"), payload)
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    # A batch we cannot apply: relearn from an empty index rather than die.
                    logger.exception("KV events from %s: bad batch (%s); index reset",
                                     self.state.worker_id, exc)
                    self.state.reset_index()
        except asyncio.CancelledError:
            pass
        finally:
            sub.close(linger=0)

    async def _receive(self, seq: int, payload: bytes) -> None:
        s = self.state
        if seq == 0 and s.last_seq > 0:
            s.cache_lost()  # the publisher restarted: a new, empty cache
        elif seq <= s.last_seq:
            return  # already applied through replay
        elif s.last_seq >= 0 and seq != s.last_seq + 1:
            s.num_gaps += 1
            self.on_gap(s)
            logger.warning("KV events from %s: gap %d -> %d; repairing", s.worker_id,
                           s.last_seq, seq)
            if not await self._replay(s.last_seq + 1):
                s.reset_index()
            if s.last_seq >= seq:
                return  # the replay already applied this batch (and maybe later ones)
        await apply_batch_sliced(s, seq, payload)

    async def _replay(self, start: int, timeout_s: float = 2.0) -> bool:
        """Apply batches >= start from the replay socket; False if they are no longer there."""
        endpoint = self.state.spec.replay_endpoint
        if not endpoint:
            return False
        sock = self.ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        try:
            await sock.send_multipart((b"", start.to_bytes(8, "big")))
            batches: list[tuple[int, bytes]] = []
            while True:
                if not await sock.poll(timeout_s * 1000):
                    return False
                _, seq_bytes, payload = await sock.recv_multipart()
                if seq_bytes == END_SEQ:
                    break
                batches.append((int.from_bytes(seq_bytes, "big"), payload))
        finally:
            sock.close(linger=0)
        for seq, payload in _since_last_clear(batches):
            if seq > self.state.last_seq:
                apply_batch(self.state, seq, payload)
        first = batches[0][0] if batches else None
        # Complete if the buffer still started at `start` (or held nothing, asked from 0).
        return first == start or (first is None and start == 0)


def _since_last_clear(batches: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The batches from the last one holding AllBlocksCleared on: nothing before it matters.
    A cheap byte search finds candidates; decoding confirms."""
    for i in range(len(batches) - 1, -1, -1):
        payload = batches[i][1]
        if b"AllBlocksCleared" in payload and any(
                type(e) is AllBlocksCleared for e in decode_event_batch(payload)):
            return batches[i:]
    return batches
