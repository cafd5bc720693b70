"""The cost model against hand computations for two architectures."""

from moep_router.cost import CostModel
from moep_router.model_spec import ModelSpec
from moep_sglang.models.checkpoint import hf_config
from moep_sglang.models.presets import get_preset


def _cost(preset: str) -> CostModel:
    return CostModel.from_spec(ModelSpec.from_config(hf_config(get_preset(preset), eos_id=0)))


def test_tiny_qwen3_by_hand():
    # hidden 64, 2 layers, 4 q heads / 2 kv heads of 16, 8 experts top-2 of width 32, vocab 1024
    attn = 64 * 4 * 16 * 2 + 64 * 2 * 16 * 2  # q,o + k,v = 12288
    ffn = 2 * 3 * 64 * 32 + 64 * 8  # two experts + router gate = 12800
    per_token = 2 * 2 * (attn + ffn)  # 2 FLOPs per MAC, 2 layers
    attn_coeff = 2 * 2 * 4 * 16  # L * 2 * H_q * d_head
    logits = 2 * 64 * 1024
    c = _cost("tiny")
    n, m = 100, 40
    assert c.flops(n) == n * per_token + attn_coeff * n * (n + 1) + logits
    assert c.flops(n, m) == (n - m) * per_token + attn_coeff * (n * (n + 1) - m * (m + 1)) + logits


def test_qwen2_moe_counts_the_shared_expert_and_its_gate():
    # hidden 64, 4 heads of 16 (kv 4), 8 experts top-2 of width 32, shared expert width 64
    attn = 4 * 64 * 64
    ffn = 2 * 3 * 64 * 32 + 64 * 8 + 3 * 64 * 64 + 64
    c = _cost("qwen2-moe-tiny")
    assert c.linear_flops_per_token == 2 * 2 * (attn + ffn)


def test_qwen3_235b_per_token_matches_active_params():
    c = _cost("qwen3-235b-a22b")
    # Active linear params of Qwen3-235B-A22B without embeddings: ~21B (of 22B with them).
    assert 2 * 20e9 < c.linear_flops_per_token < 2 * 22e9
    n = 4096  # causal attention: 94 layers x 2 x 64 heads x 128 x n(n+1); one logits row
    attn = 94 * 2 * 64 * 128 * n * (n + 1)
    assert c.flops(n) == n * c.linear_flops_per_token + attn + 2 * 4096 * 151936
    assert 0.14 < attn / (n * c.linear_flops_per_token) < 0.16  # attention is ~15% at 4K


def test_fully_cached_prompt_costs_one_token():
    c = _cost("tiny")
    n = 500
    assert c.flops(n, n) == c.flops(n, n - 1)  # SGLang always recomputes the last token
    assert c.flops(n, n - 1) < c.flops(n) / 100


def test_cached_tokens_beyond_prompt_are_clamped():
    c = _cost("tiny")
    assert c.flops(10, 50) == c.flops(10, 9)
    assert c.flops(10, -3) == c.flops(10, 0)
