"""Write a Hugging Face–format MoE checkpoint: config.json, tokenizer files, random weights."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from moep_sglang.models.fp8 import FP8_BLOCK, is_fp8_quantized, quantize_block_fp8
from moep_sglang.models.presets import ModelPreset
from moep_sglang.models.tokenizer import EOS_TOKEN, train_tokenizer

ARCHITECTURES = {"qwen3_moe": "Qwen3MoeForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM"}


@dataclass(frozen=True)
class MakeModelParams:
    preset: ModelPreset  # architecture to write
    out_dir: Path  # created if absent
    seed: int = 0  # weight seed: same seed, same bytes


@dataclass(frozen=True)
class MakeModelResult:
    out_dir: Path  # the checkpoint directory
    tokenizer_vocab_size: int  # tokens the trained tokenizer knows
    num_params: int  # parameters in the architecture
    weight_bytes: int  # bytes of safetensors written (0 for config-only presets)


def make_model(params: MakeModelParams) -> MakeModelResult:
    out = params.out_dir
    out.mkdir(parents=True, exist_ok=True)
    vocab = train_tokenizer(out)
    eos_id = _token_id(out, EOS_TOKEN)
    config = hf_config(params.preset, eos_id)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    weight_bytes = _write_weights(params, out) if params.preset.with_weights else 0
    # save_pretrained rewrote config.json in transformers' own spelling: restore the hub's.
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return MakeModelResult(out, vocab, params.preset.num_params, weight_bytes)


def ensure_model(root: Path, preset_name: str, num_layers: int | None = None) -> Path:
    """root/preset_name (root/preset_name-<L>l with num_layers), generated on first use (seed 0)
    and reused afterwards."""
    import dataclasses

    from moep_sglang.models.presets import get_preset

    preset = get_preset(preset_name)
    out = root / preset_name
    if num_layers is not None and num_layers != preset.num_layers:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        preset = dataclasses.replace(preset, num_layers=num_layers)
        out = root / f"{preset_name}-{num_layers}l"
    has_weights = any(out.glob("*.safetensors")) or not preset.with_weights
    if not (out / "config.json").exists() or not has_weights:
        make_model(MakeModelParams(preset, out))
    return out


def hf_config(p: ModelPreset, eos_id: int) -> dict:
    """The config.json of the preset, with the keys the hub's configs of that family use."""
    config = {
        "architectures": [ARCHITECTURES[p.family]],
        "model_type": p.family,
        "hidden_size": p.hidden_size,
        "num_hidden_layers": p.num_layers,
        "num_attention_heads": p.num_heads,
        "num_key_value_heads": p.num_kv_heads,
        "head_dim": p.head_dim,
        "num_experts": p.num_experts,
        "num_experts_per_tok": p.top_k,
        "moe_intermediate_size": p.moe_intermediate_size,
        "intermediate_size": max(p.shared_expert_intermediate_size, 4 * p.hidden_size),
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": p.family == "qwen3_moe",
        "vocab_size": p.vocab_size,
        "max_position_embeddings": p.max_position_embeddings,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": p.dtype,
        "use_cache": True,
    }
    if p.family == "qwen2_moe":
        config["shared_expert_intermediate_size"] = p.shared_expert_intermediate_size
        config["qkv_bias"] = True
    if p.quantization == "fp8":  # Qwen3-*-FP8 on the hub, key for key
        config["quantization_config"] = {
            "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
            "weight_block_size": list(FP8_BLOCK),
        }
    return config


def _token_id(out: Path, token: str) -> int:
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    return vocab[token]


def _write_weights(params: MakeModelParams, out: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(out)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    dtype = getattr(torch, params.preset.dtype)
    state = {
        name: _random_tensor(name, tuple(t.shape), params.seed).to(dtype)
        for name, t in sorted(model.state_dict().items())
    }
    model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.save_pretrained(out, safe_serialization=True)  # the hub's names (experts one by one)
    del model, state
    if params.preset.quantization == "fp8":
        _quantize_in_place(out)
    return sum(f.stat().st_size for f in out.glob("*.safetensors"))


def _quantize_in_place(out: Path) -> None:
    """Rewrite the saved checkpoint in the hub's FP8 layout: each quantized `X.weight` as
    float8_e4m3fn plus `X.weight_scale_inv` (float32, one per 128x128 block), the rest unchanged.
    Shard by shard, so the names, the file split and the index stay transformers' own."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else None
    for path in sorted(out.glob("*.safetensors")):
        tensors = {}
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if is_fp8_quantized(name):
                    tensors[name], tensors[name + "_scale_inv"] = quantize_block_fp8(t)
                    if index is not None:
                        index["weight_map"][name + "_scale_inv"] = path.name
                else:
                    tensors[name] = t
        save_file(tensors, str(path), metadata={"format": "pt"})
    if index is not None:
        index_path.write_text(json.dumps(index, indent=2) + "\n")


def _random_tensor(name: str, shape: tuple[int, ...], seed: int):
    """Seeded per tensor name, so weights do not depend on iteration order.

    Scales keep activations O(1) through the layers (std 1/sqrt(fan_in)) and give the LM head
    logits a spread of a few units, so label probabilities differ measurably between prompts.
    """
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + _stable_hash(name))
    if name.endswith("norm.weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if name.endswith(".bias"):
        return 0.02 * torch.randn(shape, generator=gen)
    if "embed_tokens" in name:
        return torch.randn(shape, generator=gen)
    fan_in = shape[-1]
    scale = 3.0 if name.startswith("lm_head") else 1.0
    return torch.randn(shape, generator=gen) * (scale / math.sqrt(fan_in))


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())
