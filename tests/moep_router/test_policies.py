"""Routing policies with fake workers: pure decisions, no I/O."""

import math

from moep_router.policies import make_policy
from moep_router.policies.base import RouteParams, WorkerView


def w(name, match=0, flops=0.0, threshold=math.inf, inflight=0, cost=0.0):
    return WorkerView(name, match, flops, threshold, inflight, cost)


def route(policy, *workers, tokens=(1, 2, 3, 4)):
    return make_policy(policy).route(RouteParams(tuple(tokens), tuple(workers))).worker_id \
        if isinstance(policy, str) else policy.route(RouteParams(tuple(tokens), workers)).worker_id


def test_true_flops_prefers_the_cheaper_cached_worker():
    assert route("true_flops", w("a", match=1, cost=8), w("b", match=3, cost=2),
                 w("c", cost=9)) == "b"
    assert route("true_flops", w("a", flops=3, cost=9), w("b", flops=1, cost=9)) == "b"


def test_true_flops_keeps_a_substantial_prefix_together_until_saturation():
    # a holds 3 of 4 tokens: it keeps the request although b would finish it sooner
    assert route("true_flops", w("a", match=3, flops=10, cost=1), w("b", cost=5)) == "a"
    # once a is saturated the hot prefix spills to the earliest finish among the rest
    assert route("true_flops", w("a", match=3, flops=10, cost=1, threshold=10),
                 w("b", flops=4, cost=5, threshold=10), w("c", flops=1, cost=5,
                                                          threshold=10)) == "c"


def test_true_flops_ignores_a_short_shared_header():
    # a matches 1 of 10 tokens (a task header): below 30%, the earliest finish wins
    tokens = tuple(range(10))
    assert route("true_flops", w("a", match=1, flops=10, cost=9), w("b", cost=10),
                 tokens=tokens) == "b"


def test_longest_prefix_is_the_papers_rule():
    assert route("longest_prefix", w("a", match=4, flops=10), w("b", flops=0)) == "a"
    assert route("longest_prefix", w("a", match=4, flops=10, threshold=10),
                 w("b", flops=0, threshold=10)) == "b"


def test_true_flops_ties_broken_by_least_outstanding_flops():
    assert route("true_flops", w("a", match=2, flops=9), w("b", match=2, flops=5)) == "b"


def test_true_flops_hot_prefix_spills_to_next_best_when_owner_saturated():
    workers = (w("owner", match=4, flops=10, threshold=10), w("next", match=1, flops=0,
               threshold=10), w("cold", flops=1, threshold=10))
    assert route("true_flops", *workers) == "next"


def test_true_flops_no_match_goes_to_least_loaded():
    assert route("true_flops", w("a", flops=3), w("b", flops=1), w("c", flops=2)) == "b"


def test_true_flops_queues_when_all_saturated():
    assert route("true_flops", w("a", flops=5, threshold=5), w("b", flops=9, threshold=5)) is None


def test_least_load_counts_inflight():
    assert route("least_load", w("a", inflight=3, match=4), w("b", inflight=1)) == "b"


def test_round_robin_cycles():
    p = make_policy("round_robin")
    ws = (w("a"), w("b"), w("c"))
    assert [route(p, *ws) for _ in range(4)] == ["a", "b", "c", "a"]


def test_cache_aware_follows_its_own_history_not_the_cache():
    p = make_policy("cache_aware")
    ws = (w("a"), w("b"))
    first = route(p, *ws)
    p.on_routed(first, (1, 2, 3, 4))
    assert route(p, *ws, tokens=(1, 2, 3, 9)) == first  # 3/4 > 0.3 match rate
    other = "b" if first == "a" else "a"
    assert route(p, *ws, tokens=(7, 7, 7, 7)) == other  # no match, equal load: smaller tree


def test_cache_aware_weak_match_falls_back_to_fewest_inflight_not_smallest_tree():
    # SMG 1.x: "pick min load instead of min tenant size". b's tree is larger but b is less busy.
    p = make_policy("cache_aware")
    p.on_routed("b", (5, 6, 7, 8, 9, 10))
    ws = (w("a", inflight=3), w("b", inflight=1))
    assert route(p, *ws, tokens=(7, 7, 7, 7)) == "b"
    # a match above the 0.3 rate still wins over a lighter worker
    p.on_routed("a", (7, 7, 7, 1))
    assert route(p, *ws, tokens=(7, 7, 7, 7)) == "a"


def test_cache_aware_rebalances_when_imbalanced():
    p = make_policy("cache_aware")
    p.on_routed("a", (1, 2, 3, 4))
    ws = (w("a", inflight=200), w("b", inflight=10))
    assert route(p, *ws) == "b"  # 190 > 64 and 200 > 1.5 * 10


def test_unknown_policy_lists_the_choices():
    import pytest

    with pytest.raises(ValueError, match="true_flops"):
        make_policy("magic")
