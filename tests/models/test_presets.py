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
