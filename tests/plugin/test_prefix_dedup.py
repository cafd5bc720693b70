"""In-batch prefix deduplication (moep_sglang/plugin/prefix_dedup.py).

The rule on fake prompts, then two real tiny CPU workers with 256-token prefill chunks, the rule
on and off (`MOEP_PREFIX_DEDUP=0`): a `/v1/score` whose items share a query computes the query
once with the rule and once per item without it, with equal scores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from moep_sglang.plugin import prefix_dedup
from moep_sglang.plugin.prefix_dedup import WINDOW, PrefixDedup
from tests.helpers import post, start_worker


@dataclass(eq=False)
class _Req:
    origin_input_ids: list[int]
    cached: int = 0  # tokens matched in the radix cache
    extra_key: str | None = None
    done: bool = False
    output_ids: list[int] = field(default_factory=list)

    @property
    def prefix_indices(self) -> range:
        return range(self.cached)

    def finished(self) -> bool:
        return self.done


SHARED = list(range(1000, 1000 + 3 * WINDOW))


def test_second_prompt_of_a_group_waits_for_the_first():
    d = PrefixDedup()
    lead, other = _Req(SHARED + [1, 2]), _Req(SHARED + [3, 4])
    assert not d.should_skip(lead)
    d.claim(lead)
    assert not d.should_skip(lead)  # its own claim never holds it back
    assert d.should_skip(other) and d.skipped == 1
    lead.done = True  # its prefill's result was processed: the prefix is in the cache
    assert not d.should_skip(other)
    assert d.claims == {}  # the dead claim went with the lookup


def test_a_produced_token_ends_the_claim():
    d = PrefixDedup()
    lead = _Req(SHARED + [1])
    d.claim(lead)
    lead.output_ids.append(7)  # a decoding prompt: its prompt KV is in the tree
    assert not d.should_skip(_Req(SHARED + [2]))


def test_keys_differ_by_cached_length_window_and_extra_key():
    d = PrefixDedup()
    d.claim(_Req(SHARED + [1]))
    assert not d.should_skip(_Req(SHARED + [2], cached=WINDOW))  # another m: another window
    assert not d.should_skip(_Req([5] + SHARED))  # another first window
    assert not d.should_skip(_Req(SHARED + [2], extra_key="salt"))  # another cache namespace
    assert d.should_skip(_Req(SHARED[:WINDOW] + [9] * WINDOW))  # same window: shares >= W


def test_short_uncached_tail_is_never_held():
    d = PrefixDedup()
    short = SHARED[:WINDOW - 1]
    d.claim(_Req(short))
    assert d.claims == {}
    assert not d.should_skip(_Req(short))
    d.claim(_Req(SHARED))
    assert not d.should_skip(_Req(SHARED, cached=len(SHARED) - WINDOW + 1))


def test_chunked_prompt_reclaims_at_its_new_cached_length():
    d = PrefixDedup()
    lead = _Req(SHARED + [1])
    d.claim(lead)
    lead.cached = WINDOW  # its first chunk is cached; the next chunk claims the next window
    d.claim(lead)
    assert d.should_skip(_Req(SHARED + [2], cached=WINDOW))  # shares its uncached tail: waits
    assert not d.should_skip(_Req(SHARED[:WINDOW] + [8] * WINDOW, cached=WINDOW))  # head only


def test_prune_drops_finished_holders(monkeypatch):
    monkeypatch.setattr(prefix_dedup, "_PRUNE_EVERY", 4)
    d = PrefixDedup()
    reqs = [_Req([i] + SHARED) for i in range(3)]
    for r in reqs:
        d.claim(r)
    for r in reqs:
        r.done = True
    d.claim(_Req([99] + SHARED))  # the fourth claim sweeps
    assert len(d.claims) == 1


# Real workers ------------------------------------------------------------------------------
CHUNK = 256


@pytest.fixture(scope="module")
def workers(tiny_model, log_dir):
    flags = ("--chunked-prefill-size", str(CHUNK), "--max-prefill-tokens", str(CHUNK))
    on = start_worker(tiny_model, log_dir, cpu_threads=1, extra_args=flags)
    off = start_worker(tiny_model, log_dir, cpu_threads=1, extra_args=flags,
                       env={"MOEP_PREFIX_DEDUP": "0"})
    yield {"on": on, "off": off}
    on.stop()
    off.stop()


def _score(worker, query: list[int], items: list[list[int]]) -> dict:
    status, body = post(f"{worker.config.url}/v1/score", {
        "query": query, "items": items, "label_token_ids": [5, 6], "apply_softmax": True})
    assert status == 200, body
    return body


def _prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 1000) for _ in range(n)]


@pytest.mark.parametrize("query_len", [60, 300], ids=["one_batch", "chunked_query"])
def test_items_sharing_a_query_compute_it_once(workers, query_len):
    """60: every prompt fits in one 256-token batch; 300: the first item's prompt is chunked
    (256 + 52), and the next items' budget in its second batch would take its tail."""
    items = [_prompt(query_len * 10 + i, 6) for i in range(3)]
    bodies = {}
    for name, w in workers.items():
        query = _prompt(query_len, query_len) if name == "on" else _prompt(query_len + 1,
                                                                             query_len)
        # each worker its own query, so neither finds it cached; same items, same shapes
        bodies[name] = (query, _score(w, query, items))
    on, off = bodies["on"][1], bodies["off"][1]
    assert on["usage"]["prompt_tokens"] == off["usage"]["prompt_tokens"]
    # with the rule, items 2 and 3 read the whole query from the cache
    assert on["usage"]["cached_tokens"] >= 2 * query_len
    # without it they ran beside the first (or its last chunk) and recomputed part of it
    assert off["usage"]["cached_tokens"] < 2 * query_len
    # the same scores either way: the rule-on worker's query, computed once and read from the
    # cache by items 2 and 3, against the rule-off worker computing it for every item
    again = _score(workers["off"], bodies["on"][0], items)
    for a, b in zip(on["scores"], again["scores"]):
        assert a == pytest.approx(b, abs=1e-3)
