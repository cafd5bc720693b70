"""Model presets: the architectures `moep-sglang make-model` can write.

`tiny` and `small` carry random weights and run on CPU; the real architectures are written as
config + tokenizer only, for SGLang's `--load-format dummy` on GPUs. Presets ending in `-fp8` are
written the way Qwen publishes its FP8 checkpoints (Qwen3-235B-A22B-FP8): every projection of the
decoder layers (attention q/k/v/o, experts' gate/up/down) in float8_e4m3fn with one float32
`weight_scale_inv` per 128x128 block, dynamic activation scales; router gate, norms, embeddings
and LM head in the model dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from moep_sglang.models.fp8 import FP8_BLOCK


@dataclass(frozen=True)
class ModelPreset:
    name: str  # preset name on the CLI
    family: str  # "qwen3_moe" | "qwen2_moe": HF model_type
    hidden_size: int  # model width
    num_layers: int  # decoder layers, every one an MoE layer
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (GQA)
    head_dim: int  # per-head width
    num_experts: int  # routed experts per MoE layer
    top_k: int  # experts per token
    moe_intermediate_size: int  # routed expert FFN width
    shared_expert_intermediate_size: int  # qwen2_moe shared expert FFN width (0: none)
    vocab_size: int  # model vocabulary (>= tokenizer vocabulary)
    max_position_embeddings: int  # model context length in tokens
    with_weights: bool  # write random weights (False: config + tokenizer only)
    dtype: str  # torch dtype of the written weights / config
    description: str  # one line for --help
    quantization: str = ""  # "" (weights in `dtype`) | "fp8" (block FP8, see FP8_BLOCK)

    @property
    def num_params(self) -> int:
        """Total parameter count (embeddings and LM head included)."""
        return _count_params(self, experts=self.num_experts)

    @property
    def num_active_params(self) -> int:
        """Parameters one token touches (top-k experts only)."""
        return _count_params(self, experts=self.top_k)


def _count_params(p: ModelPreset, experts: int) -> int:
    attn = p.hidden_size * p.head_dim * (2 * p.num_heads + 2 * p.num_kv_heads)
    moe = experts * 3 * p.hidden_size * p.moe_intermediate_size
    gate = p.hidden_size * p.num_experts
    shared = 3 * p.hidden_size * p.shared_expert_intermediate_size
    shared += p.hidden_size if p.shared_expert_intermediate_size else 0
    per_layer = attn + moe + gate + shared
    return p.num_layers * per_layer + 2 * p.vocab_size * p.hidden_size


def _preset(**kw) -> ModelPreset:
    defaults = dict(
        shared_expert_intermediate_size=0,
        max_position_embeddings=4096,
        with_weights=True,
        dtype="float32",
    )
    defaults.update(kw)
    return ModelPreset(**defaults)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        _preset(
            name="tiny", family="qwen3_moe", hidden_size=64, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=16, num_experts=8, top_k=2, moe_intermediate_size=32,
            vocab_size=1024, max_position_embeddings=2048,
            description="Qwen3-MoE, 2 layers, 8 experts top-2 (tests; seconds on CPU)",
        ),
        _preset(
            name="small", family="qwen3_moe", hidden_size=256, num_layers=4, num_heads=8,
            num_kv_heads=4, head_dim=32, num_experts=32, top_k=4, moe_intermediate_size=128,
            vocab_size=4096,
            description="Qwen3-MoE, 4 layers, 32 experts top-4 (demo; CPU-friendly)",
        ),
        _preset(
            name="qwen2-moe-tiny", family="qwen2_moe", hidden_size=64, num_layers=2,
            num_heads=4, num_kv_heads=4, head_dim=16, num_experts=8, top_k=2,
            moe_intermediate_size=32, shared_expert_intermediate_size=64, vocab_size=1024,
            max_position_embeddings=2048,
            description="Qwen2-MoE with a gated shared expert, 2 layers, 8 experts top-2",
        ),
        _preset(
            name="tiny-fp8", family="qwen3_moe", hidden_size=128, num_layers=2, num_heads=2,
            num_kv_heads=2, head_dim=64, num_experts=8, top_k=2, moe_intermediate_size=128,
            vocab_size=1024, max_position_embeddings=2048, quantization="fp8", dtype="bfloat16",
            description="Qwen3-MoE in the hub's block FP8 (128x128 scales), 2 layers, 8 experts "
                        "top-2 (tests; every projection a whole number of blocks)",
        ),
        _preset(
            name="qwen3-30b-a3b", family="qwen3_moe", hidden_size=2048, num_layers=48,
            num_heads=32, num_kv_heads=4, head_dim=128, num_experts=128, top_k=8,
            moe_intermediate_size=768, vocab_size=151936,
            max_position_embeddings=40960, with_weights=False, dtype="bfloat16",
            description="Qwen3-30B-A3B architecture (config + tokenizer; --load-format dummy)",
        ),
        _preset(
            name="qwen3-235b-a22b", family="qwen3_moe", hidden_size=4096, num_layers=94,
            num_heads=64, num_kv_heads=4, head_dim=128, num_experts=128, top_k=8,
            moe_intermediate_size=1536, vocab_size=151936,
            max_position_embeddings=40960, with_weights=False, dtype="bfloat16",
            description="Qwen3-235B-A22B architecture (config + tokenizer; --load-format dummy)",
        ),
        _preset(
            name="qwen3-30b-a3b-fp8", family="qwen3_moe", hidden_size=2048, num_layers=48,
            num_heads=32, num_kv_heads=4, head_dim=128, num_experts=128, top_k=8,
            moe_intermediate_size=768, vocab_size=151936,
            max_position_embeddings=40960, with_weights=False, dtype="bfloat16",
            quantization="fp8",
            description="Qwen3-30B-A3B-FP8 architecture: block FP8 as on the hub (config + "
                        "tokenizer; --load-format dummy)",
        ),
        _preset(
            name="qwen3-235b-a22b-fp8", family="qwen3_moe", hidden_size=4096, num_layers=94,
            num_heads=64, num_kv_heads=4, head_dim=128, num_experts=128, top_k=8,
            moe_intermediate_size=1536, vocab_size=151936,
            max_position_embeddings=40960, with_weights=False, dtype="bfloat16",
            quantization="fp8",
            description="Qwen3-235B-A22B-FP8 architecture: block FP8 as on the hub (config + "
                        "tokenizer; --load-format dummy)",
        ),
    )
}


def _check(p: ModelPreset) -> ModelPreset:
    if p.quantization not in ("", "fp8"):
        raise ValueError(f"preset {p.name}: unknown quantization {p.quantization!r}")
    if p.quantization and p.dtype not in ("bfloat16", "float16"):  # SGLang's own rule
        raise ValueError(f"preset {p.name}: FP8 checkpoints run in bfloat16 or float16")
    if p.quantization:  # SGLang's block-FP8 layers need whole blocks on every projection
        dims = (p.hidden_size, p.num_heads * p.head_dim, p.num_kv_heads * p.head_dim,
                p.moe_intermediate_size, p.shared_expert_intermediate_size)
        if any(d % FP8_BLOCK[0] for d in dims):
            raise ValueError(f"preset {p.name}: block FP8 needs every projection width to be a "
                             f"multiple of {FP8_BLOCK[0]}; got {dims}")
    return p


for _p in PRESETS.values():
    _check(_p)


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
