import json
import subprocess
import sys

import pytest
from safetensors import safe_open

from moep_sglang.models.checkpoint import MakeModelParams, make_model
from moep_sglang.models.corpus import LABEL_WORDS
from moep_sglang.models.presets import PRESETS, get_preset


def test_tiny_param_count_by_hand():
    p = get_preset("tiny")
    attn = 64 * 16 * (2 * 4 + 2 * 2)  # q,o: 4 heads; k,v: 2 heads; head_dim 16
    experts = 8 * 3 * 64 * 32
    gate = 64 * 8
    assert p.num_params == 2 * (attn + experts + gate) + 2 * 1024 * 64
    assert p.num_active_params == 2 * (attn + 2 * 3 * 64 * 32 + gate) + 2 * 1024 * 64


def test_qwen3_235b_shape_matches_the_paper():
    p = get_preset("qwen3-235b-a22b")
    assert (p.hidden_size, p.num_layers, p.num_heads, p.num_kv_heads, p.head_dim) == (
        4096, 94, 64, 4, 128)
    assert (p.num_experts, p.top_k, p.moe_intermediate_size, p.vocab_size) == (
        128, 8, 1536, 151936)
    assert 225e9 < p.num_params < 240e9 and 20e9 < p.num_active_params < 24e9


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="tiny"):
        get_preset("nope")


def test_tiny_checkpoint_is_deterministic_and_seeded(tmp_path):
    a = make_model(MakeModelParams(get_preset("tiny"), tmp_path / "a", seed=0))
    b = make_model(MakeModelParams(get_preset("tiny"), tmp_path / "b", seed=0))
    c = make_model(MakeModelParams(get_preset("tiny"), tmp_path / "c", seed=1))
    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    ta, tb, tc = (safe_open(r.out_dir / "model.safetensors", "pt").get_tensor(name)
                  for r in (a, b, c))
    assert ta.shape == (32, 64)
    assert (ta == tb).all() and not (ta == tc).all()
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
    assert a.weight_bytes > 4 * get_preset("tiny").num_params  # fp32 weights + headers


def test_checkpoint_uses_hub_keys_and_per_expert_tensors(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["Qwen3MoeForCausalLM"]
    assert config["num_experts"] == 8 and "num_local_experts" not in config
    keys = set(safe_open(tiny_model / "model.safetensors", "pt").keys())
    assert "model.layers.0.mlp.experts.7.down_proj.weight" in keys
    assert "model.layers.0.mlp.gate.weight" in keys


def test_label_words_are_single_tokens(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for word in LABEL_WORDS:
        assert len(tok.encode(" " + word, add_special_tokens=False)) == 1, word


def test_config_only_preset_via_cli(tmp_path):
    out = tmp_path / "big"
    res = subprocess.run(
        [sys.executable, "-m", "moep_sglang.cli", "make-model", "--preset", "qwen3-235b-a22b",
         "--out", str(out), "--num-layers", "24"],
        capture_output=True, text=True, check=True,
    )
    assert "config + tokenizer only" in res.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 24 and config["moe_intermediate_size"] == 1536
    assert not list(out.glob("*.safetensors"))


def test_cli_rejects_unknown_preset(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "moep_sglang.cli", "make-model", "--preset", "huge",
         "--out", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "invalid choice" in res.stderr


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_a_consistent_shape(name):
    p = PRESETS[name]
    assert p.num_heads % p.num_kv_heads == 0
    assert 0 < p.top_k <= p.num_experts
    assert p.num_active_params < p.num_params


def test_ensure_model_with_fewer_layers(tmp_path):
    from moep_sglang.models.checkpoint import ensure_model

    full = ensure_model(tmp_path, "qwen3-235b-a22b")
    short = ensure_model(tmp_path, "qwen3-235b-a22b", num_layers=12)
    assert short.name == "qwen3-235b-a22b-12l" and full.name == "qwen3-235b-a22b"
    assert json.loads((short / "config.json").read_text())["num_hidden_layers"] == 12
    assert json.loads((full / "config.json").read_text())["num_hidden_layers"] == 94
    assert ensure_model(tmp_path, "qwen3-235b-a22b", num_layers=94) == full
    with pytest.raises(ValueError, match="num_layers"):
        ensure_model(tmp_path, "qwen3-235b-a22b", num_layers=0)


def test_fp8_presets_write_the_hubs_quantization_config(tmp_path):
    from moep_sglang.models.checkpoint import hf_config

    for name in ("tiny-fp8", "qwen3-30b-a3b-fp8", "qwen3-235b-a22b-fp8"):
        p = get_preset(name)
        assert p.quantization == "fp8" and p.dtype == "bfloat16"
        assert hf_config(p, 0)["quantization_config"] == {
            "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
            "weight_block_size": [128, 128]}
    assert "quantization_config" not in hf_config(get_preset("tiny"), 0)
    base, fp8 = get_preset("qwen3-235b-a22b"), get_preset("qwen3-235b-a22b-fp8")
    assert base.num_params == fp8.num_params  # the same architecture


def test_fp8_preset_rules_name_the_problem():
    import dataclasses

    from moep_sglang.models.presets import _check

    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        _check(dataclasses.replace(tiny, quantization="fp8"))
    with pytest.raises(ValueError, match="multiple of 128"):
        _check(dataclasses.replace(tiny, quantization="fp8", dtype="bfloat16"))
    with pytest.raises(ValueError, match="unknown quantization"):
        _check(dataclasses.replace(tiny, quantization="int4"))


def test_block_fp8_round_trip_and_scale_layout():
    import torch

    from moep_sglang.models.fp8 import FP8_MAX, dequantize_block_fp8, quantize_block_fp8

    w = torch.randn(2, 200, 300) * torch.linspace(0.01, 10, 300)  # [E, N, K], uneven blocks
    q, s = quantize_block_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape
    assert s.shape == (2, 2, 3) and s.dtype == torch.float32  # ceil(200/128), ceil(300/128)
    assert q.float().abs().amax() == FP8_MAX  # every block's largest value maps to 448
    back = dequantize_block_fp8(q, s, torch.float32)
    step = dequantize_block_fp8(torch.ones_like(q.float()).to(q.dtype), s, torch.float32)
    # e4m3: 3 mantissa bits (relative 1/16), subnormals below 2^-6 in steps of 2^-9 (x scale)
    assert ((back - w).abs() <= w.abs() / 16 + step * 2.0 ** -9).all()
    q1, s1 = quantize_block_fp8(w[1])  # per expert = the batched form
    assert torch.equal(q1.float(), q[1].float()) and torch.equal(s1, s[1])
