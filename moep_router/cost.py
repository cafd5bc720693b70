"""True, cache-discounted FLOPs of one prefill-only request.

For n prompt tokens of which the first M are cached on the worker, per layer l:

    linear(l) = (n - M) * 2 * P_active(l)          # projections, router gate, top-k + shared experts
    attn      = 2 * H_q * d_head * (n(n+1) - M(M+1))   # QK^T and AV of the n - M new tokens,
                                                     # each over its causal context (positions M+1..n)
    total     = sum_l (linear(l) + attn) + 2 * hidden * vocab   # one logits row at the end

A fully cached prompt still recomputes its last token (SGLang always does): M <= n - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from moep_router.model_spec import ModelSpec


@dataclass(frozen=True)
class CostModel:
    spec: ModelSpec
    linear_flops_per_token: int  # sum over layers of 2 * P_active(l)
    attn_coeff: int  # L * 2 * H_q * d_head
    logits_flops: int  # 2 * hidden * vocab

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> CostModel:
        per_token = sum(
            2 * (spec.attention_params() + spec.ffn_active_params(l))
            for l in range(spec.num_layers)
        )
        return cls(
            spec=spec,
            linear_flops_per_token=per_token,
            attn_coeff=spec.num_layers * 2 * spec.num_heads * spec.head_dim,
            logits_flops=2 * spec.hidden_size * spec.vocab_size,
        )

    def flops(self, num_tokens: int, num_cached: int = 0) -> int:
        """FLOPs to prefill `num_tokens` with the first `num_cached` already in the KV cache."""
        n = num_tokens
        m = min(max(num_cached, 0), max(n - 1, 0))
        attn = self.attn_coeff * (n * (n + 1) - m * (m + 1))
        return (n - m) * self.linear_flops_per_token + attn + self.logits_flops

    def flops_per_layer(self, num_tokens: int, num_cached: int = 0) -> float:
        """Average per-layer FLOPs (what the saturation threshold is stated in)."""
        return (self.flops(num_tokens, num_cached) - self.logits_flops) / self.spec.num_layers
