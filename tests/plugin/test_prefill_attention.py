"""The FA3 prefill hook: which batches attend over their raw K/V, and how it hands them to
SGLang's own raw-K/V call (pure logic over stand-in objects: the FA3 backend needs a GPU; a
server's scores with the hook on and off are compared in tests/gpu/test_asyncep_gpu.py)."""

from types import SimpleNamespace

import pytest
import torch
from sglang.srt.layers.radix_attention import AttentionType
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from moep_sglang.plugin import prefill_attention


def _backend(**over):
    metadata = SimpleNamespace(cu_seqlens_q="cu_q", max_seq_len_q=4096, swa_out_cache_loc=None,
                               fa_skip_cu_seqlens_q=None, fa_skip_max_seqlen_q=None)
    writes = []
    pool = SimpleNamespace(set_kv_buffer=lambda *args: writes.append(args))
    base = dict(fa_skip_kv_cache=False, use_mla=False, fa_impl_ver=3, kv_cache_dtype_str="auto",
                attn_cp_size=1, has_local_attention=False, forward_metadata=metadata,
                full_cg_prefill_metadata=None, token_to_kv_pool=pool, writes=writes)
    return SimpleNamespace(**{**base, **over})


def _layer(**over):
    base = dict(is_cross_attention=False, attn_type=AttentionType.DECODER,
                sliding_window_size=-1, k_scale=None, v_scale=None)
    return SimpleNamespace(**{**base, **over})


def _batch(prefix=(0, 0), lens=(5, 3), tokens=None, mode=ForwardMode.EXTEND):
    return SimpleNamespace(forward_mode=mode, extend_prefix_lens_cpu=list(prefix),
                           extend_seq_lens_cpu=list(lens),
                           extend_num_tokens=sum(lens) if tokens is None else tokens,
                           out_cache_loc="loc")


Q = torch.empty(8, 4, 16)
K = torch.empty(8, 1, 16)


def _reason(backend=None, layer=None, batch=None, q=Q, k=K, **extras):
    return prefill_attention.skip_reason(backend or _backend(), q, k, layer or _layer(),
                                         batch or _batch(), extras)


def test_batches_that_read_the_cache_or_differ_keep_sglangs_path(monkeypatch):
    monkeypatch.delenv("MOEP_CONTIGUOUS_PREFILL_ATTN", raising=False)
    assert _reason() is None  # a plain extend, no prefix anywhere
    assert _reason(batch=_batch(prefix=(0, 17))) == "a request reads a cached prefix"
    assert _reason(batch=_batch(mode=ForwardMode.MIXED)) == "forward mode MIXED"
    assert _reason(batch=_batch(mode=ForwardMode.DECODE)) == "forward mode DECODE"
    assert _reason(batch=_batch(lens=(3, 3))) == "padded batch"  # q has 8 rows, 6 are real
    # DP attention's MAX_LEN padding counts the pad in extend_num_tokens: the lens decide
    assert _reason(batch=_batch(lens=(3, 3), tokens=8)) == "padded batch"
    full_graph = _backend()
    full_graph.full_cg_prefill_metadata = full_graph.forward_metadata  # a full-graph replay
    assert "full prefill CUDA graph" in _reason(backend=full_graph)
    assert "sliding-window" in _reason(layer=_layer(sliding_window_size=128))
    assert "cross" in _reason(layer=_layer(is_cross_attention=True))
    assert "non-causal" in _reason(layer=_layer(attn_type=AttentionType.ENCODER_ONLY))
    assert "quantized KV" in _reason(backend=_backend(kv_cache_dtype_str="fp8_e4m3"))
    assert "MLA" in _reason(backend=_backend(use_mla=True))
    assert "FA4" in _reason(backend=_backend(fa_impl_ver=4))
    assert "context parallelism" in _reason(backend=_backend(attn_cp_size=2))
    assert "embedding mode" in _reason(backend=_backend(fa_skip_kv_cache=True))
    assert "sink" in _reason(sinks=torch.empty(4))
    assert "no raw K/V" in _reason(k=None)
    monkeypatch.setenv("MOEP_CONTIGUOUS_PREFILL_ATTN", "0")
    assert _reason() == "MOEP_CONTIGUOUS_PREFILL_ATTN=0"


@pytest.mark.parametrize("save_kv_cache", [False, True])
def test_a_taken_batch_runs_sglangs_raw_kv_call_and_still_writes_the_pool(save_kv_cache):
    backend, layer, batch = _backend(), _layer(), _batch()
    seen = {}

    def original(b, q, k, v, lay, fb, save, **extras):
        seen.update(flag=b.fa_skip_kv_cache, save=save, cu=b.forward_metadata.fa_skip_cu_seqlens_q,
                    max=b.forward_metadata.fa_skip_max_seqlen_q, extras=extras)
        return "out"

    assert prefill_attention.contiguous_when_no_prefix(
        original, backend, Q, K, K, layer, batch, save_kv_cache=save_kv_cache) == "out"
    assert seen == {"flag": True, "save": False, "cu": "cu_q", "max": 4096, "extras": {}}
    assert backend.fa_skip_kv_cache is False  # restored for the next call
    # the pool gets the batch's K/V exactly once: from the fused rope kernel (save False) or here
    assert len(backend.writes) == (1 if save_kv_cache else 0)
    if save_kv_cache:
        lay, loc, k, v, _, _ = backend.writes[0]
        assert lay is layer and loc.loc == "loc" and k is K and v is K


def test_a_skipped_batch_reaches_sglang_unchanged():
    backend, batch = _backend(), _batch(prefix=(5, 0))
    seen = {}

    def original(*args, **extras):
        seen["args"], seen["extras"] = args, extras
        return "sglang"

    layer = _layer()
    assert prefill_attention.contiguous_when_no_prefix(
        original, backend, Q, K, K, layer, batch, True, q_rope=None) == "sglang"
    assert seen["args"] == (backend, Q, K, K, layer, batch, True)
    assert seen["extras"] == {"q_rope": None}
    assert backend.forward_metadata.fa_skip_cu_seqlens_q is None and not backend.writes


def test_the_flag_is_restored_when_sglang_raises():
    backend = _backend()

    def original(*args, **extras):
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError):
        prefill_attention.contiguous_when_no_prefix(original, backend, Q, K, K, _layer(),
                                                    _batch(), save_kv_cache=False)
    assert backend.fa_skip_kv_cache is False


def _varlen_causal(q, k, v, cu_seqlens_q, **kw):
    """Stand-in for FA3's varlen call: causal attention per sequence, GQA, torch SDPA."""
    cu = cu_seqlens_q.tolist()
    rep = q.shape[1] // k.shape[1]
    outs = []
    for a, b in zip(cu, cu[1:]):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))  # [H, L, D]
        outs.append(torch.nn.functional.scaled_dot_product_attention(
            qs, ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0), is_causal=True,
            scale=kw["softmax_scale"]).transpose(0, 1))
    return torch.cat(outs)  # [T, Hq, D]


@pytest.mark.parametrize("strided", ["0", "1"])
def test_a_strided_query_reaches_fa3_uncopied_with_the_same_attention(monkeypatch, strided):
    """MOEP_STRIDED_Q_ATTN=1: the hook's own raw-K/V call gets q as a view of the fused QKV
    output (no copy) and returns what SGLang's call returns for the copied q."""
    from sglang.srt.layers.attention import flashattention_backend as fab

    monkeypatch.setenv("MOEP_STRIDED_Q_ATTN", strided)
    seen = []

    def fa3(q, k, v, **kw):
        seen.append(q)
        return _varlen_causal(q, k, v, **kw)

    monkeypatch.setattr(fab, "flash_attn_varlen_func", fa3)
    hq, hkv, d, lens = 4, 2, 16, (5, 3)
    qkv = torch.randn(sum(lens), (hq + 2 * hkv) * d)  # [T, (Hq + 2 Hkv) * D]
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)  # views, rows strided
    backend = _backend(num_splits=0)
    backend.forward_metadata.cu_seqlens_q = torch.tensor([0, 5, 8], dtype=torch.int32)
    layer = _layer(tp_q_head_num=hq, tp_k_head_num=hkv, tp_v_head_num=hkv, head_dim=d,
                   v_head_dim=d, scaling=d ** -0.5, logit_cap=0.0)

    def sglangs_call(b, q_, k_, v_, lay, fb, save, **extras):  # its fa_skip_kv_cache branch
        assert b.fa_skip_kv_cache and not save
        o = fa3(q_.contiguous().view(-1, hq, d), k_.view(-1, hkv, d), v_.view(-1, hkv, d),
                cu_seqlens_q=b.forward_metadata.fa_skip_cu_seqlens_q, softmax_scale=d ** -0.5)
        return o.view(-1, hq * d)

    out = prefill_attention.contiguous_when_no_prefix(
        sglangs_call, backend, q, k, v, layer, _batch(lens=lens), save_kv_cache=False)
    want = _varlen_causal(q.contiguous().view(-1, hq, d), k.view(-1, hkv, d),
                          v.view(-1, hkv, d), backend.forward_metadata.cu_seqlens_q,
                          softmax_scale=d ** -0.5).reshape(-1, hq * d)
    assert out.shape == (sum(lens), hq * d) and torch.allclose(out, want, atol=1e-6)
    [given] = seen
    assert (given.data_ptr() == q.data_ptr()) == (strided == "1")  # the view itself, or a copy
    assert backend.fa_skip_kv_cache is False
