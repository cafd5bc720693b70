"""Every SGLang hook moep-sglang installs: one table, mirrored by patches/README.md.

A test imports every target against the pinned SGLang and checks the manifest lists it, so an
SGLang upgrade fails loudly in CI, not mid-request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from moep_sglang.plugin import (
    asyncep_hooks,
    cpu_attention,
    cpu_fallbacks,
    fp8_cpu,
    gpu_memory,
    kv_events,
    logprobs,
    moe_configs,
    prefill_attention,
    prefix_dedup,
    routed_experts,
    score,
)


@dataclass(frozen=True)
class HookSpec:
    target: str  # dotted path of the SGLang function/method hooked
    hook: Callable  # our function
    kind: str  # HookType name: "BEFORE" | "AFTER" | "AROUND" | "REPLACE"
    why: str  # one line, repeated in patches/README.md
    when: str = "always"  # "always" | "asyncep" (AsyncEP on) | "batching" (AsyncEP or batching on)


_SCORE = "sglang.srt.entrypoints.openai.serving_score.OpenAIServingScore"
_SCHED = "sglang.srt.managers.scheduler.Scheduler"
_RUNNER = "sglang.srt.model_executor.model_runner.ModelRunner"
_MOE = "sglang.srt.layers.moe.fused_moe_triton.layer.FusedMoE"
_FP8 = "sglang.srt.layers.quantization.fp8"
_SCORE_MIXIN = "sglang.srt.managers.tokenizer_manager_score_mixin.TokenizerManagerScoreMixin"
_ADDER = "sglang.srt.managers.schedule_policy.PrefillAdder"

HOOKS: tuple[HookSpec, ...] = (
    HookSpec(
        "sglang.srt.layers.logprob_processor.get_token_ids_logprobs_raw",
        logprobs.empty_rows_as_tensors, "AROUND",
        "a batch mixing /v1/score with plain requests crashed the scheduler ('list'.tolist)",
    ),
    HookSpec(
        "sglang.srt.layers.logprob_processor.get_token_ids_logprobs_batch_optimized",
        logprobs.label_logprobs_without_sync, "AROUND",
        "label-token logprobs waited for the batch's forward inside its launch: no sync",
    ),
    HookSpec(
        "sglang.kernels.ops.elementwise.elementwise.fused_gate_sigmoid_mul_add",
        cpu_fallbacks.gate_sigmoid_mul_add, "AROUND",
        "Triton-only shared-expert gate of Qwen2-MoE killed CPU workers; torch on CPU tensors",
    ),
    HookSpec(
        "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend."
        "_run_sdpa_forward_extend", cpu_attention.extend_without_prefix_queries, "AROUND",
        "CPU prefill attention recomputed the cached prefix's queries: only the new ones",
    ),
    HookSpec(
        f"{_FP8}.Fp8LinearMethod.process_weights_after_loading_block_quant",
        fp8_cpu.keep_linear_weights, "AROUND",
        "block-FP8 checkpoints died at load on CPUs without AMX: keep the loaded FP8 tensors",
    ),
    HookSpec(
        f"{_FP8}.Fp8LinearMethod.apply", fp8_cpu.linear, "AROUND",
        "block-FP8 linear on CPUs without AMX: dequantize the weight, torch matmul (W8A16)",
    ),
    HookSpec(
        f"{_FP8}.Fp8MoEMethod.process_weights_after_loading_block_quant",
        fp8_cpu.keep_moe_weights, "AROUND",
        "block-FP8 experts died at load on CPUs without AMX: keep the loaded FP8 tensors",
    ),
    HookSpec(
        f"{_FP8}.Fp8MoEMethod.apply", fp8_cpu.moe, "AROUND",
        "block-FP8 MoE on CPUs without AMX: SGLang's torch MoE over dequantized experts",
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
    HookSpec(
        "sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config.get_moe_configs",
        moe_configs.tuned_first, "AROUND",
        "fused-MoE Triton configs: moep's tuned files (H100/H200, Triton 3.6) before SGLang's",
    ),
    HookSpec(
        "sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe.fused_experts",
        routed_experts.experts_first, "AROUND",
        "routed experts of prefill-sized bf16 calls on Hopper: the gate-up GEMM with SiLU-and-mul "
        "in one kernel (default), or torch's grouped GEMM (opt-in)",
    ),
    HookSpec(
        "sglang.srt.layers.attention.flashattention_backend.FlashAttentionBackend."
        "forward_extend", prefill_attention.contiguous_when_no_prefix, "AROUND",
        "FA3 prefill re-read every batch's K/V through the page table: over the raw K/V when "
        "no request has a cached prefix",
    ),
    HookSpec(
        "sglang.srt.mem_cache.events.KVCacheEventMixin._record_store_event",
        kv_events.store_event_per_node, "AROUND",
        "KV events: one BlockStored per radix node, not one per page (worker speed with them)",
    ),
    HookSpec(
        "sglang.srt.mem_cache.events.KVCacheEventMixin._record_remove_event",
        kv_events.remove_event_vectorised, "AROUND",
        "the matching BlockRemoved: one hash conversion pass per node, not one call per page",
    ),
    HookSpec(
        f"{_ADDER}.add_one_req", prefix_dedup.skip_shared_prefix, "AROUND",
        "prompts sharing an uncached prefix in one batch computed it each: one does, the rest "
        "wait a step for the cache",
    ),
    HookSpec(
        f"{_ADDER}.add_chunked_req", prefix_dedup.reclaim_chunk, "AROUND",
        "the same rule across a chunked prompt's chunks: it claims its next window each chunk",
    ),
    HookSpec(
        "sglang.srt.server_args.ServerArgs._handle_gpu_memory_settings",
        gpu_memory.reserve_for_activations, "AROUND",
        "1.5 MB per batch token kept free (48 GiB at 32K): a 30B worker on H100 never started",
    ),
    HookSpec(
        "sglang.srt.layers.quantization.unquant.UnquantizedFusedMoEMethod.create_weights",
        asyncep_hooks.shard_create_weights, "AROUND",
        "AsyncEP: a routed FusedMoE allocates and loads only this rank's E/N experts", "asyncep",
    ),
    HookSpec(
        f"{_FP8}.Fp8MoEMethod.create_weights", asyncep_hooks.shard_create_weights, "AROUND",
        "AsyncEP: a block-FP8 FusedMoE allocates and loads only this rank's E/N experts and "
        "their scales", "asyncep",
    ),
    HookSpec(
        f"{_RUNNER}.load_model", asyncep_hooks.setup_after_load, "AROUND",
        "AsyncEP: join the group, share shards, build the ring, measure T after loading",
        "batching",
    ),
    HookSpec(
        f"{_RUNNER}.forward", asyncep_hooks.begin_step, "AROUND",
        "AsyncEP: issue the first K layers' gathers before layer 0 computes", "asyncep",
    ),
    HookSpec(
        f"{_MOE}.run_moe_core", asyncep_hooks.moe_with_gathered_experts, "AROUND",
        "AsyncEP: wait for the layer's gathered experts, compute over all E, gather layer i+K",
        "asyncep",
    ),
    HookSpec(
        f"{_SCHED}.get_next_batch_to_run", asyncep_hooks.lockstep, "AROUND",
        "AsyncEP collective: agree each step whether anyone has work; idle ranks gather only",
        "asyncep",
    ),
    HookSpec(
        f"{_SCHED}.run_batch", asyncep_hooks.one_step_per_batch, "AROUND",
        "AsyncEP collective: a batch that ran no forward still runs its gathers", "asyncep",
    ),
    HookSpec(
        f"{_SCHED}.get_new_batch_prefill", asyncep_hooks.hold_until_saturated, "AROUND",
        "prefill batching: hold the queue below T FLOPs per layer (bounded wait)", "batching",
    ),
    HookSpec(
        f"{_SCHED}.get_internal_state", asyncep_hooks.report_state, "AROUND",
        "report T, gather/stall stats and weight bytes in /server_info for the router",
        "batching",
    ),
)


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for spec in active_hooks():
        HookRegistry.register(spec.target, spec.hook, HookType[spec.kind])


def active_hooks() -> tuple[HookSpec, ...]:
    """The hooks this process installs: AsyncEP's only when a group is configured."""
    from moep_sglang.asyncep import runtime

    asyncep = runtime.asyncep_config() is not None
    batching = asyncep or runtime.batching_config() is not None
    on = {"always": True, "asyncep": asyncep, "batching": batching}
    return tuple(spec for spec in HOOKS if on[spec.when])
