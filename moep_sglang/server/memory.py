"""How much GPU memory a prefill-only worker keeps free for one batch's activations.

SGLang 0.5.17 sizes `--mem-fraction-static` (weights + KV pool, over GPU memory) by keeping
1.5 MB per token of `--chunked-prefill-size` free for activations (and at least 10 GB on a GPU
over 60 GB: `ServerArgs._handle_gpu_memory_settings`). With the launcher's 32,768-token batches
that is 48 GiB: on an 80 GB H100 the Qwen3-30B-A3B worker (61 GB of weights) did not start
("Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static=0.384",
bench/results/gpu/h100_30b_table2_one_gpu_dd.json), and on an H200 a third of the card was kept
from the KV pool.

A prefill-only forward keeps, per token of its batch, at most these bf16 activations alive (one
layer at a time; logits only for each prompt's last position):

    a = 2 B · (4·H + (2·n_q + 2·n_kv)·d + k·(3·I + H) + [3·I_s + H])

H the hidden size; q, k, v and the attention output over n_q, n_kv, n_kv, n_q heads of size d;
4·H the residual, the normed input and the attention and MLP outputs; per routed expert copy
(k = num_experts_per_tok; a dense MLP is k = 1 with its intermediate size) the gate-and-up output
(2·I), the activated product (I) and the down projection's output (H); the same for a shared
expert of width I_s where the model has one (Qwen2-MoE). The launcher keeps 2·a·C free for
batches of C tokens (the factor 2: allocator slack and kernel workspaces): Qwen3-30B-A3B at
C = 32,768: 6.4 GiB, the 235B shape 12.6 GiB, against SGLang's 48 GiB; SGLang's floor (10 GiB),
constant and CUDA-graph terms stay (so on an H100 the 30B worker gets --mem-fraction-static
0.874 instead of 0.384, on an H200 0.929 instead of 0.654). Measured: the 30B model on one H100
served the Table-2-shaped mix in 32K batches with 9.8 GB free (`--mem-fraction-static 0.88`,
bench/results/gpu/h100_30b_table2_one_gpu_dd3.json).
"""

from __future__ import annotations

SGLANG_MB_PER_TOKEN = 1.5  # SGLang 0.5.17's activation reserve per chunk token (MB)
SGLANG_MIN_TOKENS = 2048  # ... counted for at least this many tokens
SGLANG_FLOOR_MB = 10 * 1024  # ... and at least this much in all on a GPU over 60 GB
SLACK = 2.0  # reserve / estimated activations


def activation_bytes_per_token(config: dict) -> int | None:
    """a of the module docstring from a checkpoint's config.json (None: fields missing)."""
    text = config.get("text_config", config)
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        kv_heads = int(text.get("num_key_value_heads", heads))
        head_dim = int(text.get("head_dim") or hidden // heads)
        if text.get("moe_intermediate_size") and text.get("num_experts_per_tok"):
            topk, inter = int(text["num_experts_per_tok"]), int(text["moe_intermediate_size"])
        else:
            topk, inter = 1, int(text["intermediate_size"])
        shared = int(text.get("shared_expert_intermediate_size") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    mlp = topk * (3 * inter + hidden) + (3 * shared + hidden if shared else 0)
    return 2 * (4 * hidden + (2 * heads + 2 * kv_heads) * head_dim + mlp)


def activation_reserve_mb(bytes_per_token: int, batch_tokens: int) -> float:
    """MB to keep free for batches of batch_tokens tokens: SLACK x a x C."""
    return SLACK * bytes_per_token * batch_tokens / 2**20


def mem_fraction_with_reserve(sglang_fraction: float, gpu_mem_mb: float, sglang_tokens: int,
                              reserve_mb: float) -> float:
    """SGLang's --mem-fraction-static with its activation term (1.5 MB per token of
    sglang_tokens: its chunk size) replaced by reserve_mb; its other terms and its floor kept.
    Never lower than SGLang's own."""
    sglang_mb = SGLANG_MB_PER_TOKEN * max(sglang_tokens, SGLANG_MIN_TOKENS)
    if reserve_mb >= sglang_mb:
        return sglang_fraction
    reserved_mb = (1 - sglang_fraction) * gpu_mem_mb - (sglang_mb - reserve_mb)
    floor_mb = SGLANG_FLOOR_MB if gpu_mem_mb > 60 * 1024 else 0.0
    return round((gpu_mem_mb - max(reserved_mb, floor_mb)) / gpu_mem_mb, 3)
