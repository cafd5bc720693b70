"""The router's tokenizer and its cache of long texts' token ids."""

import concurrent.futures as cf

import pytest

from moep_router.config import RouterConfig
from moep_router.tokenize import CACHE_MIN_CHARS, RouterTokenizer, TokenCache


def test_cache_evicts_least_recently_used_by_tokens_held():
    c = TokenCache(capacity=10)
    c.put("a", (1, 2, 3, 4))
    c.put("b", (5, 6, 7))
    assert c.get("a") == (1, 2, 3, 4)  # a is now the most recent
    c.put("c", (8, 9, 10, 11))  # 11 > 10: b, the least recent, goes
    assert c.get("b") is None and c.get("a") and c.get("c")
    assert c.tokens == 8 and len(c) == 2
    c.put("a", (1,))  # replaced: its old ids leave the count
    assert c.tokens == 5
    c.put("huge", tuple(range(11)))  # larger than the whole cache: not kept, nothing evicted
    assert c.get("huge") is None and c.tokens == 5
    assert (c.hits, c.misses) == (3, 2)


def test_cache_invariant_holds_under_threads():
    c = TokenCache(capacity=1000)

    def work(t):
        for i in range(300):
            key = f"{t}-{i % 40}"
            if c.get(key) is None:
                c.put(key, tuple(range(i % 37 + 1)))

    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert c.tokens == sum(len(v) for v in c._entries.values()) <= 1000
    assert c.hits + c.misses == 1200


def test_cached_ids_equal_fresh_ones_and_each_caller_gets_its_own_list(tiny_model):
    plain, cached = RouterTokenizer(tiny_model), RouterTokenizer(tiny_model, cache_tokens=10_000)
    long_text = "The doctor noticed that the fast phone was cheap. " * 20
    assert len(long_text) >= CACHE_MIN_CHARS
    first = cached.encode(long_text)
    first.append(-1)  # a caller extending its prompt must not change what the cache holds
    again = cached.encode(long_text)
    assert again == plain.encode(long_text) and -1 not in again
    assert (cached.cache.hits, cached.cache.misses) == (1, 1)
    cached.encode("short text")  # below CACHE_MIN_CHARS: tokenized each time, never looked up
    assert (cached.cache.hits, cached.cache.misses) == (1, 1) and len(cached.cache) == 1
    assert plain.cache is None


def test_cache_size_option_is_validated(tiny_model):
    with pytest.raises(ValueError, match="--tokenize-cache-tokens"):
        RouterConfig(model_path=tiny_model, workers=(), tokenize_cache_tokens=-1)
