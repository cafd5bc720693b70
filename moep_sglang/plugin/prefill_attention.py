"""Hook: FlashAttention-3 prefill over the batch's own K/V when no request has a cached prefix.

SGLang's FA3 backend (`FlashAttentionBackend.forward_extend`) writes an extend's keys and values
into the paged pool and then reads them all back through the page table
(`flash_attn_with_kvcache`, page size 1), also when every request of the batch starts from an
empty prefix, where the keys it reads are exactly the `k`, `v` it was handed. Its embedding mode
alone (`fa_skip_kv_cache`) attends over the raw tensors instead (`flash_attn_varlen_func`,
contiguous K/V). For a batch with

    extend_prefix_len(r) = 0 for every request r     (nothing read from the cache)

the two are the same attention, so we take SGLang's own raw-K/V call for it. The pool is still
written (decode, a later chunk or the radix cache may read it): by the model's fused rope-and-store
kernel where it ran (the backend then gets `save_kv_cache=False`), else here, with SGLang's write.
Everything else (a cached prefix, decode, mixed or target-verify batches, MLA, sliding-window,
cross or local attention, context parallelism, FP8 KV, FA4, sinks, batches padded past their
tokens, and whatever runs inside a full prefill CUDA graph, whose replay would repeat this call's
choice for batches it never saw) runs SGLang's code unchanged. One request with a cached prefix
sends its whole batch down SGLang's path. `MOEP_CONTIGUOUS_PREFILL_ATTN=0` turns it off.

SGLang's raw-K/V call copies the query first (`q.contiguous()`): the model hands it a strided view
of its fused QKV output, [T, (Hq + 2 Hkv) * D] split by columns, while FA3 reads any row stride
(it reads k and v from that same buffer so). The hook makes that same call itself with the
strided query: one [T, Hq * D] copy less per layer (Qwen3-30B-A3B at 32,768 tokens: 256 MB read
and 256 MB written; on one H100 1.028x end to end at 4K and 1.013x at 32K, scores bit-identical).
`MOEP_STRIDED_Q_ATTN=0` goes back to SGLang's call and its copy.
"""

from __future__ import annotations

import torch

from moep_sglang import envs

_EXTRAS = ("q_rope", "k_rope", "sinks", "q_descale", "k_descale", "v_descale", "score_mod",
           "aux_tensors", "rel_bias", "rel_bias_event")


def skip_reason(backend, q, k, layer, forward_batch, extras: dict) -> str | None:
    """Why this call keeps SGLang's paged read (None: attend over the raw K/V)."""
    if not envs.contiguous_prefill_attention():
        return "MOEP_CONTIGUOUS_PREFILL_ATTN=0"
    if backend.fa_skip_kv_cache:
        return "SGLang's embedding mode takes this path itself"
    if backend.use_mla or backend.fa_impl_ver != 3 or backend.kv_cache_dtype_str != "auto":
        return "MLA, FA4 or a quantized KV cache"
    if backend.attn_cp_size > 1 or backend.has_local_attention:
        return "context parallelism or local attention"
    if (backend.forward_metadata is backend.full_cg_prefill_metadata
            or (q.is_cuda and torch.cuda.is_current_stream_capturing())):
        return "full prefill CUDA graph (capture or its metadata)"
    if forward_batch.forward_mode.name != "EXTEND":
        return f"forward mode {forward_batch.forward_mode.name}"
    if k is None or any(extras.get(name) is not None for name in _EXTRAS):
        return "no raw K/V, or MLA/sink/FP8/score-mod inputs"
    if (layer.is_cross_attention or layer.attn_type.name != "DECODER"
            or (layer.sliding_window_size is not None and layer.sliding_window_size > -1)):
        return "cross, non-causal or sliding-window attention"
    prefix = forward_batch.extend_prefix_lens_cpu
    if prefix is None or any(prefix):
        return "a request reads a cached prefix"
    # the rows cu_seqlens_q covers; SGLang pads q past them (CUDA graphs, DP attention, whose
    # extend_num_tokens may count the padding too) and then needs its own dummy tail segment
    seq_lens = forward_batch.extend_seq_lens_cpu
    if seq_lens is None or q.shape[0] != sum(seq_lens):
        return "padded batch"
    return None


def contiguous_when_no_prefix(original, backend, q, k, v, layer, forward_batch,
                              save_kv_cache=True, **extras):
    """AROUND FlashAttentionBackend.forward_extend: same arguments, same return."""
    if skip_reason(backend, q, k, layer, forward_batch, extras) is not None:
        return original(backend, q, k, v, layer, forward_batch, save_kv_cache, **extras)
    metadata = backend.forward_metadata
    strided_q = (envs.strided_q_prefill_attention() and not q.is_contiguous()
                 and q.stride(-1) == 1)
    if save_kv_cache:  # SGLang's own write of this branch (bf16/fp16 pool, MHA, no CP)
        from sglang.srt.mem_cache.memory_pool import KVWriteLoc

        backend.token_to_kv_pool.set_kv_buffer(
            layer, KVWriteLoc(forward_batch.out_cache_loc, metadata.swa_out_cache_loc), k, v,
            layer.k_scale, layer.v_scale)
    if strided_q:
        return _raw_kv_attention(backend, q, k, v, layer, forward_batch)
    # SGLang's raw-K/V call reads these (keys = queries: no prefix); set for this batch
    metadata.fa_skip_cu_seqlens_q = metadata.cu_seqlens_q  # [B+1]
    metadata.fa_skip_max_seqlen_q = metadata.max_seq_len_q
    backend.fa_skip_kv_cache = True
    try:
        return original(backend, q, k, v, layer, forward_batch, False, **extras)
    finally:
        backend.fa_skip_kv_cache = False


def _raw_kv_attention(backend, q, k, v, layer, forward_batch):
    """SGLang 0.5.17's `fa_skip_kv_cache` call of `forward_extend` for the batches skip_reason
    lets through (causal, no window, softcap as the layer's, no sinks or descales, no padding:
    cu_seqlens_q covers q), with q not copied. q [T, Hq*D] with any row stride, k and v
    [T, Hkv*D]; returns [T, Hq*Dv]."""
    from sglang.srt.layers.attention import flashattention_backend as fab

    metadata = backend.forward_metadata
    out = getattr(forward_batch, "_attn_output", None)  # SGLang's preallocated output, if any
    o = fab.flash_attn_varlen_func(
        q=q.view(-1, layer.tp_q_head_num, layer.head_dim),  # [T, Hq, D], rows strided
        k=k.view(-1, layer.tp_k_head_num, layer.head_dim),  # [T, Hkv, D]
        v=v.view(-1, layer.tp_v_head_num, layer.v_head_dim),  # [T, Hkv, Dv]
        cu_seqlens_q=metadata.cu_seqlens_q, cu_seqlens_k=metadata.cu_seqlens_q,  # [B+1]
        max_seqlen_q=metadata.max_seq_len_q, max_seqlen_k=metadata.max_seq_len_q,
        softmax_scale=layer.scaling, causal=True, window_size=(-1, -1),
        softcap=layer.logit_cap, num_splits=backend.num_splits,
        out=None if out is None else out.view(-1, layer.tp_q_head_num, layer.v_head_dim))
    return o.view(-1, layer.tp_q_head_num * layer.v_head_dim)  # [T, Hq*Dv]
