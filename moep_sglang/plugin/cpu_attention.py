"""Prefill attention of SGLang's torch_native backend (the CPU workers' backend) without
recomputing the cached prefix.

SGLang 0.5.17's `TorchNativeAttnBackend._run_sdpa_forward_extend` pads each request's queries to
its whole sequence (prefix + new tokens), runs causal SDPA over seq x seq and keeps the last rows:
a prompt whose first 1,000 of 1,024 tokens came from the radix cache still pays the attention of
all 1,024 queries. On one CPU worker under the table2 mix this attention was 38% of the
scheduler's samples (bench/results/worker_profile_cpu.json), so cache hits saved the linear
layers' work but not attention's.

Here each request's new queries q (positions p .. s-1, p = cached prefix) attend to keys
0 .. s-1 under the bottom-right causal mask M[i, j] = (j <= p + i), which is exactly the rows the
padded computation kept: the same softmax over the same keys per query, up to float rounding.
A request without a prefix keeps SDPA's own `is_causal` (the same call as SGLang's). Sliding
windows, encoder-decoder attention and non-causal calls go to SGLang's code unchanged.
"""

from __future__ import annotations

import torch
from torch.nn.functional import scaled_dot_product_attention


def extend_without_prefix_queries(original, backend, query, output, k_cache, v_cache,
                                  req_to_token, req_pool_indices, seq_lens, extend_prefix_lens,
                                  extend_seq_lens, encoder_lens=None, scaling=None,
                                  enable_gqa=False, causal=False, is_cross_attn=False,
                                  sliding_window_size=None):
    """AROUND TorchNativeAttnBackend._run_sdpa_forward_extend (same arguments and result).

    query:   [num_tokens, num_heads, head_size]    (the new tokens of every request)
    output:  [num_tokens, num_heads, head_size]    written in place and returned
    k_cache: [max_total_num_tokens, num_kv_heads, head_size]; v_cache likewise
    req_to_token: [max_num_reqs, max_context_len]; the other index tensors: [num_seqs]
    """
    plain = (causal and encoder_lens is None and not is_cross_attn
             and (sliding_window_size is None or sliding_window_size <= -1))
    if not plain:
        return original(backend, query, output, k_cache, v_cache, req_to_token,
                        req_pool_indices, seq_lens, extend_prefix_lens, extend_seq_lens,
                        encoder_lens=encoder_lens, scaling=scaling, enable_gqa=enable_gqa,
                        causal=causal, is_cross_attn=is_cross_attn,
                        sliding_window_size=sliding_window_size)
    q_all = query.movedim(0, query.dim() - 2)  # [num_heads, num_tokens, head_size]
    start_q = 0
    for i in range(seq_lens.shape[0]):
        n_q, prefix, n_kv = (int(extend_seq_lens[i]), int(extend_prefix_lens[i]),
                             int(seq_lens[i]))
        end_q = start_q + n_q
        q = q_all[:, start_q:end_q, :]  # [num_heads, n_q, head_size]
        tokens = req_to_token[req_pool_indices[i], :n_kv]
        k = k_cache[tokens].movedim(0, query.dim() - 2)  # [num_kv_heads, n_kv, head_size]
        v = v_cache[tokens].movedim(0, query.dim() - 2)
        if not (q.dtype == k.dtype == v.dtype):
            k, v = k.to(q.dtype), v.to(q.dtype)
        if prefix == 0:
            mask, is_causal = None, True
        else:  # query row r sits at position prefix + r: it sees keys 0 .. prefix + r
            mask = torch.ones(n_q, n_kv, dtype=torch.bool, device=q.device).tril(prefix)
            is_causal = False
        out = scaled_dot_product_attention(
            q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask,
            enable_gqa=enable_gqa, scale=scaling, is_causal=is_causal)  # [1, H, n_q, D]
        output[start_q:end_q] = out.squeeze(0).movedim(query.dim() - 2, 0)
        start_q = end_q
    return output
