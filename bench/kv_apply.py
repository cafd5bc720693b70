"""The router's cost of a worker's KV events: decode + apply to the cache index, per token.

Builds SGLang-shaped event batches (msgpack [ts, [event, ...], dp_rank]) for sequences of
`seq_len` tokens sharing nothing, in both shapes a worker sends: one BlockStored per page (SGLang
0.5.17's radix cache, mem_cache/events.py: "page") or one per radix node, all its pages (a worker
with the moep plugin, moep_sglang/plugin/kv_events.py: "node"), then times
kv_listener.apply_batch over all of them (what the router's event loop runs for each batch it
replays), then the BlockRemoved batches that evict them again, then the
stored batches once more as the listener applies live ones (apply_batch_sliced). Reports us per
token stored / removed / stored in slices and the objects the index keeps alive (the garbage
collector's load).

    python -m bench.kv_apply            # page size 1 and 16, both shapes, 200,000 tokens each
"""

from __future__ import annotations

import argparse
import gc
import random
import time

import msgspec

from moep_router.config import WorkerSpec
from moep_router.kv_listener import apply_batch
from moep_router.workers import WorkerState


def batches(num_tokens: int, seq_len: int, page: int, per_batch: int, seed: int,
            shape: str = "page"):
    """(stored payloads, removed payloads): per_batch sequences per batch."""
    rng = random.Random(seed)
    enc = msgspec.msgpack.Encoder()
    stored, removed, h = [], [], 1
    seqs = []
    for _ in range(num_tokens // seq_len):
        tokens = [rng.randrange(150_000) for _ in range(seq_len)]
        hashes = list(range(h, h + seq_len // page))
        h += len(hashes)
        seqs.append((tokens, hashes))
    for i in range(0, len(seqs), per_batch):
        group = seqs[i:i + per_batch]
        events = []
        for tokens, hashes in group:
            if shape == "node":
                events.append(["BlockStored", hashes, None, tokens, page, None, "GPU"])
                continue
            parent = None
            for j, bh in enumerate(hashes):
                events.append(["BlockStored", [bh], parent, tokens[j * page:(j + 1) * page],
                               page, None, "GPU"])
                parent = bh
        stored.append(enc.encode([time.time(), events, 0]))
        removed.append(enc.encode([time.time(), [["BlockRemoved", hashes, "GPU"]
                                                  for _, hashes in group], 0]))
    return stored, removed


def run(num_tokens: int, page: int, seq_len: int = 2000, per_batch: int = 4, seed: int = 0,
        shape: str = "page") -> dict:
    stored, removed = batches(num_tokens, seq_len, page, per_batch, seed, shape)
    state = WorkerState(WorkerSpec("http://fake:1"), float("inf"))
    gc.collect()
    objects_before = len(gc.get_objects())
    t0 = time.perf_counter()
    for seq, payload in enumerate(stored):
        apply_batch(state, seq, payload)
    t_store = time.perf_counter() - t0
    objects = len(gc.get_objects()) - objects_before
    blocks = state.index.num_blocks
    t0 = time.perf_counter()
    for seq, payload in enumerate(removed, start=len(stored)):
        apply_batch(state, seq, payload)
    t_remove = time.perf_counter() - t0
    assert state.index.num_blocks == 0 and blocks == num_tokens // page
    t_sliced = _sliced(stored)
    return {"page_size": page, "events": shape, "tokens": num_tokens, "blocks": blocks,
            "batches": len(stored),
            "us_per_token_stored": t_store / num_tokens * 1e6,
            "us_per_token_removed": t_remove / num_tokens * 1e6,
            "us_per_token_stored_sliced": t_sliced / num_tokens * 1e6,
            "tracked_objects_per_block": objects / blocks}


def _sliced(stored: list[bytes]) -> float:
    """Seconds to apply the stored batches as the listener does (apply_batch_sliced: batches
    over APPLY_SLICE_BLOCKS blocks decoded event by event, the loop served between slices)."""
    import asyncio

    try:
        from moep_router.kv_listener import apply_batch_sliced
    except ImportError:  # the code before slicing
        return float("nan")
    state = WorkerState(WorkerSpec("http://fake:2"), float("inf"))

    async def run() -> float:
        t0 = time.perf_counter()
        for seq, payload in enumerate(stored):
            await apply_batch_sliced(state, seq, payload)
        return time.perf_counter() - t0

    return asyncio.run(run())


def main() -> None:
    from bench.common import print_table, write_result

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3, help="best of N per page size")
    p.add_argument("--name", default="kv_apply")
    a = p.parse_args()
    rows = []
    for shape in ("page", "node"):
        for page in (1, 16):
            runs = [run(a.tokens, page, seed=r, shape=shape) for r in range(a.repeats)]
            best = min(runs, key=lambda r: r["us_per_token_stored"])
            best["repeats_us_per_token_stored"] = [round(r["us_per_token_stored"], 3)
                                                   for r in runs]
            rows.append(best)
    table = print_table(rows, [("events", "events", "s"), ("page_size", "page", "d"),
                               ("tokens", "tokens", ",d"),
                               ("us_per_token_stored", "us/token stored", ".3f"),
                               ("us_per_token_removed", "us/token removed", ".3f"),
                               ("us_per_token_stored_sliced", "us/token sliced", ".3f"),
                               ("tracked_objects_per_block", "GC objects/block", ".2f")])
    write_result(a.name, {"rows": rows, "table": table})


if __name__ == "__main__":
    main()
