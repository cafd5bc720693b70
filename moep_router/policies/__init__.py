"""Routing policies, one module each, behind one interface (policies/base.py)."""

from __future__ import annotations

from moep_router.policies.base import Policy


def make_policy(name: str) -> Policy:
    from moep_router.policies.cache_aware import CacheAwarePolicy
    from moep_router.policies.least_load import LeastLoadPolicy
    from moep_router.policies.longest_prefix import LongestPrefixPolicy
    from moep_router.policies.round_robin import RoundRobinPolicy
    from moep_router.policies.true_flops import TrueFlopsPolicy

    table = {"true_flops": TrueFlopsPolicy, "cache_aware": CacheAwarePolicy,
             "least_load": LeastLoadPolicy, "round_robin": RoundRobinPolicy,
             "longest_prefix": LongestPrefixPolicy}
    if name not in table:
        raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(table)}")
    return table[name]()


POLICY_NAMES = ("true_flops", "longest_prefix", "cache_aware", "least_load", "round_robin")
