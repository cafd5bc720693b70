"""The model shape the cost model needs, read from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    hidden_size: int  # model width
    num_layers: int  # decoder layers
    num_heads: int  # query heads (H_q)
    num_kv_heads: int  # key/value heads
    head_dim: int  # per-head width (d_head)
    vocab_size: int  # LM head rows
    num_experts: int  # routed experts per MoE layer (0: dense model)
    top_k: int  # routed experts per token
    moe_intermediate_size: int  # routed expert FFN width
    shared_expert_intermediate_size: int  # shared expert FFN width (0: none)
    dense_intermediate_size: int  # FFN width of non-MoE layers
    moe_layers: tuple[bool, ...]  # per layer: True if its FFN is an MoE
    max_context_len: int  # max_position_embeddings

    # Public API ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict) -> ModelSpec:
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        layers = config["num_hidden_layers"]
        experts = config.get("num_experts") or config.get("num_local_experts") or 0
        step = config.get("decoder_sparse_step", 1) or 1
        dense_only = set(config.get("mlp_only_layers") or [])
        moe_layers = tuple(
            experts > 0 and i not in dense_only and (i + 1) % step == 0 for i in range(layers)
        )
        return cls(
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads", heads),
            head_dim=config.get("head_dim") or hidden // heads,
            vocab_size=config["vocab_size"],
            num_experts=experts,
            top_k=config.get("num_experts_per_tok", 0) if experts else 0,
            moe_intermediate_size=config.get("moe_intermediate_size")
            or config.get("intermediate_size", 0),
            shared_expert_intermediate_size=config.get("shared_expert_intermediate_size", 0)
            or 0,
            dense_intermediate_size=config.get("intermediate_size", 0),
            moe_layers=moe_layers,
            max_context_len=config.get("max_position_embeddings", 0),
        )

    @classmethod
    def from_model_dir(cls, path: Path | str) -> ModelSpec:
        return cls.from_config(json.loads((Path(path) / "config.json").read_text()))

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt a worker at the model's full context takes (0: unknown). SGLang
        0.5.17 refuses an input of max_req_input_len = context - 1 - 5 tokens or more
        (tp_worker.get_worker_info, managers/utils.validate_input_length)."""
        return max(self.max_context_len - 7, 0)

    def attention_params(self) -> int:
        """q, k, v, o projection parameters of one layer."""
        q_and_o = 2 * self.hidden_size * self.num_heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_and_o + k_and_v

    def ffn_active_params(self, layer: int) -> int:
        """FFN parameters one token touches in `layer`: gate + top-k experts + shared expert."""
        h = self.hidden_size
        if not self.moe_layers[layer]:
            return 3 * h * self.dense_intermediate_size
        routed = self.top_k * 3 * h * self.moe_intermediate_size
        gate = h * self.num_experts
        shared = 3 * h * self.shared_expert_intermediate_size
        shared_gate = h if self.shared_expert_intermediate_size else 0
        return routed + gate + shared + shared_gate

    def expert_bytes_per_layer(self, bytes_per_param: int = 2) -> int:
        """Bytes of one MoE layer's routed experts (what AsyncEP gathers)."""
        return self.num_experts * 3 * self.hidden_size * self.moe_intermediate_size * bytes_per_param
