"""CPU prefill attention without the cached prefix's queries (moep_sglang/plugin/cpu_attention.py)
against SGLang's own TorchNativeAttnBackend._run_sdpa_forward_extend on the same inputs."""

from __future__ import annotations

import pytest
import torch

from moep_sglang.plugin.cpu_attention import extend_without_prefix_queries

pytest.importorskip("sglang")

from sglang.srt.layers.attention.torch_native_backend import (  # noqa: E402
    TorchNativeAttnBackend,
)

SGLANG = TorchNativeAttnBackend._run_sdpa_forward_extend


class _Backend:  # what the function reads of its backend: only the sliding-window helper
    _make_sliding_window_mask = staticmethod(TorchNativeAttnBackend._make_sliding_window_mask)


def _inputs(prefixes: list[int], news: list[int], heads: int, kv_heads: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d, pool = 16, 512
    seqs = [p + n for p, n in zip(prefixes, news)]
    k_cache = torch.randn(pool, kv_heads, d, generator=g)  # [pool, kv_heads, head]
    v_cache = torch.randn(pool, kv_heads, d, generator=g)
    req_to_token = torch.zeros(len(seqs), max(seqs), dtype=torch.int64)  # [reqs, max_context]
    slots = torch.randperm(pool, generator=g)
    at = 0
    for i, s in enumerate(seqs):  # each request's tokens at scattered pool slots
        req_to_token[i, :s] = slots[at:at + s]
        at += s
    query = torch.randn(sum(news), heads, d, generator=g)  # [new tokens, heads, head]
    return dict(query=query, k_cache=k_cache, v_cache=v_cache, req_to_token=req_to_token,
                req_pool_indices=torch.arange(len(seqs)), seq_lens=torch.tensor(seqs),
                extend_prefix_lens=torch.tensor(prefixes), extend_seq_lens=torch.tensor(news),
                enable_gqa=heads != kv_heads)


def _run(fn, x: dict, **kw) -> torch.Tensor:
    out = torch.empty_like(x["query"])
    args = (x["query"], out, x["k_cache"], x["v_cache"], x["req_to_token"],
            x["req_pool_indices"], x["seq_lens"], x["extend_prefix_lens"], x["extend_seq_lens"])
    return fn(_Backend(), *args, None, scaling=0.25, enable_gqa=x["enable_gqa"], **kw)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_equals_sglang_with_and_without_prefixes(heads, kv_heads):
    x = _inputs(prefixes=[0, 37, 120, 5], news=[20, 1, 33, 64], heads=heads, kv_heads=kv_heads)
    ref = _run(SGLANG, x, causal=True)
    ours = _run(lambda *a, **k: extend_without_prefix_queries(SGLANG, *a, **k), x, causal=True)
    assert (ours - ref).abs().max() < 1e-5
    assert ref.abs().max() > 0.1  # a real output, not zeros on both sides


def test_uncommon_calls_run_sglangs_code():
    x = _inputs(prefixes=[10], news=[6], heads=2, kv_heads=2)
    calls = []

    def spy(*a, **k):
        calls.append(k)
        return SGLANG(*a, **k)

    for kw in ({"causal": False}, {"causal": True, "sliding_window_size": 4}):
        _run(lambda *a, **k: extend_without_prefix_queries(spy, *a, **k), x, **kw)
    assert len(calls) == 2
    _run(lambda *a, **k: extend_without_prefix_queries(spy, *a, **k), x, causal=True)
    assert len(calls) == 2  # the common case is ours
