import pytest

from moep_sglang.models.checkpoint import hf_config
from moep_sglang.models.presets import get_preset
from moep_sglang.server.memory import (
    activation_bytes_per_token,
    activation_reserve_mb,
    mem_fraction_with_reserve,
)


def _bytes(preset: str) -> int:
    return activation_bytes_per_token(hf_config(get_preset(preset), 0))


def test_activation_bytes_per_token_by_the_formula():
    # 2 B x (4H + (2 n_q + 2 n_kv) d + k (3I + H)): Qwen3-30B-A3B H 2048, 32/4 heads of 128,
    # 8 experts of 768; the 235B shape H 4096, 64/4 heads, 8 experts of 1536
    assert _bytes("qwen3-30b-a3b") == 2 * (4 * 2048 + 72 * 128 + 8 * (3 * 768 + 2048))
    assert _bytes("qwen3-235b-a22b") == 2 * (4 * 4096 + 136 * 128 + 8 * (3 * 1536 + 4096))
    assert activation_reserve_mb(_bytes("qwen3-30b-a3b"), 32768) == 6528.0


def test_shared_expert_and_dense_mlp_count_too():
    moe = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
           "moe_intermediate_size": 32, "num_experts_per_tok": 2}
    assert activation_bytes_per_token(moe) == 2 * (256 + 12 * 16 + 2 * (96 + 64))
    shared = {**moe, "shared_expert_intermediate_size": 128}
    assert activation_bytes_per_token(shared) == activation_bytes_per_token(moe) + 2 * (384 + 64)
    dense = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256}
    assert activation_bytes_per_token(dense) == 2 * (256 + 16 * 16 + 768 + 64)
    assert activation_bytes_per_token({"hidden_size": 64}) is None  # unknown shape


@pytest.mark.parametrize("gpu_mb, floor_mb", [(81559, 10240), (49152, 0)])
def test_fraction_replaces_only_the_activation_term(gpu_mb, floor_mb):
    sglang = round((gpu_mb - (512 + 1.5 * 32768 + 128)) / gpu_mb, 3)  # SGLang's 32K rule
    got = mem_fraction_with_reserve(sglang, gpu_mb, 32768, reserve_mb=1000)
    expected_reserved = max(512 + 1000 + 128, floor_mb)
    assert got == pytest.approx((gpu_mb - expected_reserved) / gpu_mb, abs=0.002)
    # a reserve above SGLang's own leaves SGLang's value
    assert mem_fraction_with_reserve(sglang, gpu_mb, 32768, reserve_mb=60000) == sglang
