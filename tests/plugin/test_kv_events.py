"""KV events per radix node (moep_sglang/plugin/kv_events.py) against SGLang's own per-page ones.

Both run on SGLang's real RadixCache (simulated pools, CPU): the same inserts, splits and
evictions must describe the same blocks — same hashes, parents, tokens, in the same order — and
the router's index built from either must match every prompt the same.
"""

from __future__ import annotations

import random

import pytest
import torch

from moep_router.cache_index import CacheIndex
from moep_sglang.plugin import kv_events

pytest.importorskip("sglang")

from sglang.srt.disaggregation.kv_events import (  # noqa: E402
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
)
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams  # noqa: E402
from sglang.srt.mem_cache.events import KVCacheEventMixin  # noqa: E402
from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey  # noqa: E402


class _Allocator:
    device = torch.device("cpu")

    def free_segment(self, *args, **kwargs) -> None:
        pass


def _cache(page: int, ours: bool, monkeypatch) -> RadixCache:
    cache = RadixCache.create_simulated(mock_allocator=_Allocator(), page_size=page,
                                        enable_kv_cache_events=True)
    if ours:  # what the plugin's AROUND hooks install, on this instance only
        mixin = KVCacheEventMixin
        store, remove = mixin._record_store_event, mixin._record_remove_event
        monkeypatch.setattr(cache, "_record_store_event",
                            lambda node, medium=None: kv_events.store_event_per_node(
                                store, cache, node, medium))
        monkeypatch.setattr(cache, "_record_remove_event",
                            lambda node, medium=None: kv_events.remove_event_vectorised(
                                remove, cache, node, medium))
    return cache


def _sequences(seed: int) -> list[list[int]]:
    """Prompts that share prefixes and branch (radix splits), of lengths not page-aligned."""
    rng = random.Random(seed)
    system = [rng.randrange(1000) for _ in range(37)]
    seqs = [system + [rng.randrange(1000) for _ in range(rng.randrange(1, 90))] for _ in range(6)]
    seqs.append(seqs[0][:20] + [7] * 25)  # splits the shared node mid-way
    seqs.append([rng.randrange(1000) for _ in range(64)])
    return seqs


def _run(cache: RadixCache, seqs: list[list[int]]) -> list:
    for s in seqs:
        cache.insert(InsertParams(key=RadixKey(s), value=torch.tensor(s, dtype=torch.int64)))
    stored = cache.take_events()
    cache.evict(EvictParams(num_tokens=10**6))
    return stored + cache.take_events()


def _blocks(events: list) -> tuple[list, list]:
    """(every stored block as (hash, parent, tokens) in order, every removed hash in order)."""
    stored, removed = [], []
    for e in events:
        if isinstance(e, BlockStored):
            parent = e.parent_block_hash
            for i, h in enumerate(e.block_hashes):
                stored.append((h, parent, tuple(e.token_ids[i * e.block_size:
                                                             (i + 1) * e.block_size])))
                parent = h
        elif isinstance(e, BlockRemoved):
            removed.extend(e.block_hashes)
        else:
            assert isinstance(e, AllBlocksCleared)
            removed.append("all")
    return stored, removed


@pytest.mark.parametrize("page", [1, 4, 16])
def test_per_node_events_describe_the_same_blocks(page, monkeypatch):
    seqs = _sequences(page)
    theirs = _run(_cache(page, False, monkeypatch), seqs)
    ours = _run(_cache(page, True, monkeypatch), seqs)
    assert _blocks(ours) == _blocks(theirs)
    stored_ours = [e for e in ours if isinstance(e, BlockStored)]
    stored_theirs = [e for e in theirs if isinstance(e, BlockStored)]
    assert len(stored_ours) == len(seqs)  # one event per inserted node
    assert len(stored_theirs) == len(_blocks(theirs)[0])  # SGLang: one per page
    if page == 1:
        assert len(stored_ours) < len(stored_theirs) / 10


@pytest.mark.parametrize("page", [1, 16])
def test_the_router_index_is_the_same_from_either(page, monkeypatch):
    seqs = _sequences(100 + page)
    indexes = []
    for ours in (False, True):
        cache = _cache(page, ours, monkeypatch)
        for s in seqs:
            cache.insert(InsertParams(key=RadixKey(s), value=torch.tensor(s, dtype=torch.int64)))
        index = CacheIndex()
        for e in cache.take_events():
            if isinstance(e, BlockStored):
                index.apply_stored(e.block_hashes, e.parent_block_hash, e.token_ids,
                                   e.block_size)
        indexes.append(index)
    probes = seqs + [s[:len(s) // 2] + [1, 2, 3] for s in seqs]
    assert [indexes[1].match_len(p) for p in probes] == [indexes[0].match_len(p) for p in probes]
    assert indexes[1].num_blocks == indexes[0].num_blocks > 0
    assert any(indexes[1].match_len(p) > 0 for p in probes)


def test_switched_off_it_is_sglangs_own(monkeypatch):
    monkeypatch.setenv("MOEP_KV_EVENTS_PER_NODE", "0")
    seqs = _sequences(3)
    theirs = _run(_cache(1, False, monkeypatch), seqs)
    ours = _run(_cache(1, True, monkeypatch), seqs)
    assert ours == theirs


def test_int64s_is_sglangs_conversion():
    from sglang.srt.mem_cache.utils import hash_str_to_int64

    rng = random.Random(0)
    digests = ["%064x" % rng.getrandbits(256) for _ in range(1000)] + ["f" * 64, "0" * 64]
    assert kv_events.int64s(digests) == [hash_str_to_int64(h) for h in digests]


def test_a_nodes_partial_last_page_is_described_as_sglang_does(monkeypatch):
    # RadixCache.insert cuts keys to whole pages; its _insert_helper (below it) does not, so a
    # node can end mid-page: that page is its own, shorter block in both shapes.
    page, seqs = 4, _sequences(7)

    def run(ours: bool) -> list:
        cache = _cache(page, ours, monkeypatch)
        for s in seqs:
            cache._insert_helper(cache.root_node, RadixKey(s),
                                 torch.tensor(s, dtype=torch.int64))
        return cache.take_events()

    theirs, ours = run(False), run(True)
    assert _blocks(ours) == _blocks(theirs)
    partial = [e for e in ours if isinstance(e, BlockStored) and e.block_size < page]
    assert partial and all(len(e.block_hashes) == 1 for e in partial)
