from moep_router.pending import PendingPrefixes
from moep_router.prefix_keys import CHUNK, PromptKeys
from moep_router.token_trie import TokenTrie


def test_pending_counts_chunks_of_inflight_prompts():
    p = PendingPrefixes(settle_s=0)  # promised while in flight only
    a = PromptKeys(range(100))
    b = PromptKeys(list(range(40)) + [999] * 60)
    p.add(a)
    p.add(b)
    assert p.match_len(PromptKeys(range(70))) == 64  # four whole chunks of 16
    p.finish(a)
    assert p.match_len(PromptKeys(range(70))) == 32  # only b's first 40 tokens remain
    p.finish(b)
    assert p.match_len(PromptKeys(range(70))) == 0 and p.num_prompts == 0
    assert CHUNK == 16


def test_token_trie_refcounts():
    t = TokenTrie()
    t.add([1, 2, 3])
    t.add([1, 2, 4])
    t.remove([1, 2, 3])
    assert t.match_len([1, 2, 3]) == 2 and t.match_len([1, 2, 4, 5]) == 3
