"""Every SGLang hook moep-sglang installs: one table, mirrored by patches/README.md.

A test imports every target against the pinned SGLang and checks the manifest lists it, so an
SGLang upgrade fails loudly in CI, not mid-request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from moep_sglang.plugin import cpu_fallbacks, logprobs, score


@dataclass(frozen=True)
class HookSpec:
    target: str  # dotted path of the SGLang function/method hooked
    hook: Callable  # our function
    kind: str  # HookType name: "BEFORE" | "AFTER" | "AROUND" | "REPLACE"
    why: str  # one line, repeated in patches/README.md


_SCORE = "sglang.srt.entrypoints.openai.serving_score.OpenAIServingScore"
_SCORE_MIXIN = "sglang.srt.managers.tokenizer_manager_score_mixin.TokenizerManagerScoreMixin"

HOOKS: tuple[HookSpec, ...] = (
    HookSpec(
        "sglang.srt.layers.logprob_processor.get_token_ids_logprobs_raw",
        logprobs.empty_rows_as_tensors, "AROUND",
        "a batch mixing /v1/score with plain requests crashed the scheduler ('list'.tolist)",
    ),
    HookSpec(
        "sglang.kernels.ops.elementwise.elementwise.fused_gate_sigmoid_mul_add",
        cpu_fallbacks.gate_sigmoid_mul_add, "AROUND",
        "Triton-only shared-expert gate of Qwen2-MoE killed CPU workers; torch on CPU tensors",
    ),
    HookSpec(
        f"{_SCORE}._validate_request", score.validate_score_request, "REPLACE",
        "reject empty items and missing/negative label_token_ids with a 400 that says why",
    ),
    HookSpec(
        f"{_SCORE_MIXIN}._process_single_item_scoring_results", score.count_cached_tokens,
        "AROUND", "sum the per-item cached_tokens SGLang computes but drops for scoring",
    ),
    HookSpec(
        f"{_SCORE}._handle_non_streaming_request", score.add_cache_usage, "AROUND",
        "return usage.cached_tokens (and prompt_tokens_details) on /v1/score",
    ),
)


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for spec in HOOKS:
        HookRegistry.register(spec.target, spec.hook, HookType[spec.kind])
