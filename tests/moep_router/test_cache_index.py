"""The cache index against event streams: a recorded one from a real worker, and edge cases."""

import random
from pathlib import Path

import pytest

import msgspec

from moep_router.cache_index import CacheIndex
from moep_router.kv_listener import apply_batch
from moep_router.messages import decode_event_batch
from moep_router.workers import WorkerState
from moep_router.config import WorkerSpec

RECORDED = Path(__file__).parent / "data" / "kv_events_tiny.msgpack"


def _stored(hashes, parent, tokens, bs=1):
    return ["BlockStored", hashes, parent, tokens, bs, None, None]


def _payload(*events):
    return msgspec.msgpack.encode([0.0, list(events), None])


def test_block_size_one_chain_matches_exact_prefix():
    idx = CacheIndex()
    idx.apply_stored([11, 12, 13], None, [5, 6, 7], 1)
    assert idx.match_len([5, 6, 7, 8]) == 3
    assert idx.match_len([5, 6, 9]) == 2
    assert idx.match_len([6]) == 0
    idx.apply_stored([14], 12, [9], 1)  # a branch after [5, 6]
    assert idx.match_len([5, 6, 9, 1]) == 3


def test_a_nodes_partial_last_page_keeps_the_index():
    # SGLang sends a node's partial last page as a block of its own, shorter than the page size:
    # it is never matched, and it is not a change of page size (which would clear the index).
    idx = CacheIndex()
    idx.apply_stored([1, 2], None, [1, 2, 3, 4, 5, 6, 7, 8], 4)
    idx.apply_stored([3], 2, [9, 10, 11], 3)
    assert idx.num_blocks == 2 and idx.block_size == 4
    assert idx.match_len([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]) == 8


def test_after_a_clear_a_smaller_page_size_is_learned_again():
    # A worker restarted at page size 1 after running at 16: its one-token blocks are not
    # partial pages of the old size.
    idx = CacheIndex()
    idx.apply_stored([1], None, list(range(16)), 16)
    idx.clear()
    for i in range(20):
        idx.apply_stored([100 + i], 100 + i - 1 if i else None, [i], 1)
    assert idx.block_size == 1 and idx.num_blocks == 20
    assert idx.match_len(list(range(20)) + [99]) == 20


def test_multi_token_blocks_and_partial_blocks():
    idx = CacheIndex()
    idx.apply_stored([1, 2], None, [1, 2, 3, 4, 5, 6, 7], 4)  # second block partial: ignored
    assert idx.num_blocks == 1
    assert idx.match_len([1, 2, 3, 4, 5, 6, 7, 8]) == 4
    assert idx.match_len([1, 2, 3]) == 0  # shorter than a block


def test_eviction_removes_block_and_descendants():
    idx = CacheIndex()
    idx.apply_stored([1, 2, 3], None, [7, 8, 9], 1)
    idx.apply_removed([2])
    assert idx.match_len([7, 8, 9]) == 1 and idx.num_blocks == 1
    idx.apply_removed([999])  # unknown hash: ignored
    assert idx.num_blocks == 1


def test_orphan_blocks_are_not_matchable():
    idx = CacheIndex()
    idx.apply_stored([5], 4, [3], 1)  # parent 4 never seen
    assert idx.num_blocks == 0 and idx.match_len([3]) == 0


def test_clear():
    idx = CacheIndex()
    idx.apply_stored([1], None, [1], 1)
    idx.clear()
    assert idx.num_blocks == 0 and idx.match_len([1]) == 0


def test_decode_ignores_unknown_event_kinds():
    events = decode_event_batch(_payload(_stored([1], None, [4]), ["SomethingNew", 1, 2],
                                         ["AllBlocksCleared"]))
    assert [e.kind for e in events] == ["BlockStored", "AllBlocksCleared"]


def test_recorded_stream_from_a_real_worker():
    """Recorded from a tiny CPU worker (tests/moep_router/data/README.md): prompts A and B sharing a
    prefix, then /flush_cache."""
    frames = msgspec.msgpack.decode(RECORDED.read_bytes())
    meta = frames["prompts"]
    state = WorkerState(WorkerSpec("http://w:1"), threshold_flops=1.0)
    for seq, payload in frames["before_flush"]:
        apply_batch(state, seq, payload)
    a, b = meta["a"], meta["b"]
    assert state.index.match_len(a) >= len(a) - 1  # SGLang caches all but maybe the last token
    assert state.index.match_len(b) >= len(b) - 1
    shared = meta["shared_len"]
    assert state.index.match_len(a[:shared] + [0]) == shared
    for seq, payload in frames["flush"]:
        apply_batch(state, seq, payload)
    assert state.index.num_blocks == 0 and state.index.match_len(a) == 0


def _naive_match(stored: list[tuple[int, ...]], prompt: list[int], block: int) -> int:
    """Longest prefix of `prompt` that is a whole-block prefix of some stored sequence."""
    best = 0
    for seq in stored:
        n = 0
        while n + block <= min(len(seq), len(prompt)) and \
                seq[n:n + block] == tuple(prompt[n:n + block]):
            n += block
        best = max(best, n)
    return best


@pytest.mark.parametrize("block", [1, 4, 16, 24])
def test_chunked_matching_equals_a_naive_walk(block):
    rng = random.Random(block)
    idx, stored, next_hash = CacheIndex(), [], 1
    base = [rng.randrange(5) for _ in range(200)]  # few symbols: many shared prefixes
    for _ in range(30):
        cut = rng.randrange(0, 150) // block * block
        seq = tuple(base[:cut] + [rng.randrange(5) for _ in range(rng.randrange(1, 120))])
        seq = seq[: len(seq) // block * block]
        hashes = list(range(next_hash, next_hash + len(seq) // block))
        next_hash += len(hashes)
        # Store only blocks not already held: SGLang's events carry the parent of the new part.
        held = idx.match_len(seq) // block
        parent = None if held == 0 else _hash_at(idx, seq, held, block)
        idx.apply_stored(hashes[held:], parent, list(seq[held * block:]), block)
        stored.append(seq)
    for _ in range(200):
        prompt = list(rng.choice(stored)[: rng.randrange(0, 200)]) + [rng.randrange(5)
                                                                       for _ in range(10)]
        assert idx.match_len(prompt) == _naive_match(stored, prompt, block)


def _hash_at(idx: CacheIndex, seq, num_blocks: int, block: int) -> int:
    edges, h = idx._roots, None
    for b in range(num_blocks):
        h = edges[tuple(seq[b * block:(b + 1) * block])]
        edges = idx._nodes[h].children
    return h


def test_eviction_drops_chunk_keys():
    idx = CacheIndex()
    seq = list(range(40))
    idx.apply_stored(list(range(1, 41)), None, seq, 1)
    assert idx.match_len(seq) == 40
    idx.apply_removed([20])  # token 19 and everything after it
    assert idx.match_len(seq) == 19
    idx.apply_stored(list(range(100, 121)), 19, seq[19:40], 1)  # relearned under new hashes
    assert idx.match_len(seq) == 40


def test_evicting_a_deep_sequence_is_not_recursive():
    idx = CacheIndex()
    n = 5000  # deeper than Python's recursion limit
    idx.apply_stored(list(range(1, n + 1)), None, list(range(n)), 1)
    idx.apply_removed([1])
    assert idx.num_blocks == 0 and idx.match_len(list(range(20))) == 0


def _apply_sliced_counting_turns(seq: int, payload: bytes, slice_blocks: int = 1000):
    """Apply `payload` in slices on an event loop while another task (a request being served
    meanwhile) counts the turns it got: (the sliced worker state, turns)."""
    import asyncio

    from moep_router.kv_listener import apply_batch_sliced

    async def run() -> tuple[WorkerState, int]:
        sliced = WorkerState(WorkerSpec("http://w:2"), threshold_flops=1.0)
        turns = 0

        async def other() -> None:
            nonlocal turns
            while sliced.last_seq != seq:
                turns += 1
                await asyncio.sleep(0)

        await asyncio.gather(apply_batch_sliced(sliced, seq, payload, slice_blocks=slice_blocks),
                             other())
        return sliced, turns

    return asyncio.run(run())


def test_a_large_batch_is_applied_in_slices_with_the_loop_serving_in_between():
    tokens = list(range(5000))
    events = [_stored([i + 1], i or None, [t]) for i, t in enumerate(tokens)]
    events.insert(2500, ["SomethingNew", 1])  # unknown kinds are skipped here too
    payload = _payload(*events)
    whole = WorkerState(WorkerSpec("http://w:1"), threshold_flops=1.0)
    apply_batch(whole, 7, payload)

    sliced, turns = _apply_sliced_counting_turns(7, payload)
    assert turns >= 4  # 5,001 events in slices of 1,000: the loop ran between them
    assert sliced.last_seq == whole.last_seq == 7
    assert sliced.index.num_blocks == whole.index.num_blocks == 5000
    assert sliced.index.match_len(tokens + [1]) == whole.index.match_len(tokens) == 5000


def test_one_long_chain_event_is_applied_in_slices():
    # A moep worker sends one BlockStored per radix node: here 5,000 blocks in one event, cut
    # into chained slices with the loop running in between, ending in the same index.
    tokens = list(range(5000))
    payload = _payload(_stored(list(range(1, 5001)), None, tokens),
                       _stored([9001, 9002], 5000, [1, 2]))
    whole = WorkerState(WorkerSpec("http://w:1"), threshold_flops=1.0)
    apply_batch(whole, 3, payload)

    sliced, turns = _apply_sliced_counting_turns(3, payload)
    assert turns >= 4
    assert sliced.index.num_blocks == whole.index.num_blocks == 5002
    assert sliced.index.match_len(tokens + [1, 2, 3]) == whole.index.match_len(tokens + [1, 2]) \
        == 5002


def test_a_chain_that_starts_mid_slice_is_applied_in_chained_slices():
    # 300 one-block events use part of the first slice's budget; the long chain after them
    # fills the rest of it, then goes on in whole slices, parents chained across every cut.
    singles = [_stored([50_000 + i], None, [10_000 + i]) for i in range(300)]
    chain = list(range(2500))
    payload = _payload(*singles, _stored(list(range(1, 2501)), None, chain))
    whole = WorkerState(WorkerSpec("http://w:1"), threshold_flops=1.0)
    apply_batch(whole, 5, payload)

    sliced, turns = _apply_sliced_counting_turns(5, payload)
    assert turns >= 2  # 2,800 blocks in slices of 1,000
    assert sliced.index.num_blocks == whole.index.num_blocks == 2800
    assert sliced.index.match_len(chain + [1]) == whole.index.match_len(chain) == 2500
    assert sliced.index.match_len([10_299]) == 1
