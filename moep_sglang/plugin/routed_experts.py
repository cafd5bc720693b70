"""Hook on SGLang's Triton `fused_experts`: prefill-sized unquantized calls on Hopper run one of
the plugin's paths for the routed experts; every other call runs SGLang's code unchanged.

- `gate_up_silu` (default; MOEP_FUSED_MOE_ACT=0 turns it off): SGLang's own sequence with its
  first GEMM and the SiLU-and-mul pass merged into one Triton kernel
  (moep_sglang/kernels/gate_up_silu.py). On one H100 the whole MoE layer ran 1.01-1.30x faster
  with bit-identical outputs (bench/results/gpu/h100_gate_up_silu.json), and Qwen3-30B-A3B at 4K
  65,214 against 64,185 tok/s end to end (h100_30b_one_gpu_gus2.json, h100_30b_one_gpu_gus.json).
- `grouped` (MOEP_GROUPED_MOE=1, wins over the other): torch's CUTLASS grouped GEMM
  (moep_sglang/kernels/grouped_moe.py). Off by default: on one H100, Qwen3-30B-A3B with 32K-token
  batches ran 1.3-3.9% slower end to end with it
  (bench/results/gpu/h100_30b_one_gpu_grpcontig.json against h100_30b_one_gpu_split.json).
"""

from __future__ import annotations

import functools
from types import MappingProxyType

import torch

from moep_sglang import envs

# Below this many tokens in one call SGLang's kernel stays (decode, small prefill chunks).
MIN_TOKENS = MappingProxyType({"grouped": 2048, "gate_up_silu": 1024})


def path() -> str | None:
    """The plugin path the switches pick (None: SGLang's)."""
    if envs.grouped_moe():
        return "grouped"
    if envs.fused_moe_act():
        return "gate_up_silu"
    return None


@functools.cache
def _hopper(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] == 9


def _tp_size() -> int:
    try:
        from sglang.srt.distributed import get_tensor_model_parallel_world_size

        return get_tensor_model_parallel_world_size()
    except Exception:  # noqa: BLE001 - no group initialised: one process
        return 1


def _fused_sum_all_reduce() -> bool:
    """SGLang's --enable-fused-moe-sum-all-reduce (its down GEMM adds into the output atomically,
    which neither plugin path does)."""
    try:
        from sglang.srt.runtime_context import get_exec

        return bool(get_exec().moe.enable_fused_moe_sum_all_reduce)
    except Exception:  # noqa: BLE001 - no server context (a bare process): SGLang's default
        return False


def skip_reason(hidden_states, w1, w2, topk_ids, config, quantized: bool, biased: bool,
                min_tokens: int) -> str | None:
    """Why this call keeps SGLang's kernel (None: a plugin path may take it). Only what both
    paths compute as SGLang does is taken: bf16/fp16 contiguous activations, experts without
    biases or quantization, gated SiLU, no router weight on the input, every expert local
    (SGLang filters ids unless num_experts == num_local_experts), a full combine of k >= 2
    experts per token, and an in-place call or a single-GPU one (SGLang allocates an
    out-of-place output in symmetric memory for the tensor-parallel all-reduce)."""
    if quantized or biased:
        return "quantized or biased experts"
    if hidden_states.dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {hidden_states.dtype}"
    if w1.dtype != hidden_states.dtype or w2.dtype != hidden_states.dtype:
        return "expert dtype differs from the activations'"
    if config.activation != "silu" or not config.is_gated:
        return f"activation {config.activation} (gated={config.is_gated})"
    if (config.apply_router_weight_on_input or config.no_combine
            or config.gemm1_alpha is not None or config.gemm1_clamp_limit is not None
            or getattr(config, "swiglu_limit", None) is not None):
        return "router weight on input, no combine or a clamped/alpha SwiGLU"
    if config.num_experts is None or config.num_experts != config.num_local_experts:
        return "expert parallelism (filtered experts)"
    if hidden_states.shape[0] < min_tokens:
        return f"{hidden_states.shape[0]} tokens < {min_tokens}"
    e, two_i, h = w1.shape
    if w2.shape != (e, h, two_i // 2) or hidden_states.shape[1] != h or h % 8 or two_i % 16:
        return "shapes the plugin paths do not take"
    if topk_ids.shape[0] != hidden_states.shape[0]:
        return "topk rows differ from tokens"
    if topk_ids.shape[1] < 2:
        return "one expert per token (SGLang writes its output directly)"
    if topk_ids.shape[1] > 2 and _fused_sum_all_reduce():
        return "--enable-fused-moe-sum-all-reduce"
    if not hidden_states.is_contiguous():
        return "strided activations"
    if not (w1.is_contiguous() and w2.is_contiguous()):
        return "strided expert weights"
    if not hidden_states.is_cuda:
        return "not on a GPU"
    if not _hopper(hidden_states.device.index or 0):
        return "not a Hopper GPU"
    if torch.cuda.is_current_stream_capturing():
        return "inside CUDA-graph capture"
    if not config.inplace and _tp_size() > 1:
        return "out-of-place under tensor parallelism"
    return None


QUANT_FLAGS = ("use_fp8_w8a8", "use_int8_w8a8", "use_int8_w8a16", "use_int4_w4a16")
QUANT_TENSORS = ("w1_scale", "w2_scale", "w1_zp", "w2_zp", "a1_scale", "a2_scale", "a1_q")


def experts_first(original, hidden_states, w1, w2, topk_output, moe_runner_config, *args,
                  **kwargs):
    """AROUND fused_moe.fused_experts: same arguments (SGLang passes the optional ones by name;
    anything else goes to SGLang as given), same return (hidden_states itself when the config is
    in place)."""
    which = path()
    topk_weights, topk_ids, _ = topk_output
    quantized = (any(kwargs.get(f) for f in QUANT_FLAGS)
                 or any(kwargs.get(t) is not None for t in QUANT_TENSORS))
    biased = kwargs.get("b1") is not None or kwargs.get("b2") is not None
    if which is None or args or skip_reason(hidden_states, w1, w2, topk_ids, moe_runner_config,
                                            quantized, biased, MIN_TOKENS[which]) is not None:
        return original(hidden_states, w1, w2, topk_output, moe_runner_config, *args, **kwargs)
    scale = moe_runner_config.routed_scaling_factor
    scale = 1.0 if scale is None else float(scale)
    out = hidden_states if moe_runner_config.inplace else None
    if which == "gate_up_silu":
        # every expert is local (skip_reason), so SGLang would filter no ids either
        return gate_up_silu_experts(hidden_states, w1, w2, topk_weights, topk_ids, out=out,
                                    scale=scale, filter_expert=False)
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_fused_moe

    from moep_sglang.kernels.grouped_moe import grouped_experts

    return grouped_experts(hidden_states, w1, w2, topk_weights, topk_ids, out=out, scale=scale,
                           act=sglang_fused_moe.silu_and_mul)


def gate_up_silu_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                         topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
                         out: torch.Tensor | None, scale: float, filter_expert: bool
                         ) -> torch.Tensor:
    """SGLang 0.5.17's `_fused_moe_kernel_sequence` for the calls skip_reason lets through, with
    moep_sglang.kernels.gate_up_silu for its first GEMM and activation: SGLang's config lookup
    and alignment, its down GEMM (its down config and TMA choice) and moe_sum_reduce.
    x [T, H], w13 [E, 2I, H], w2 [E, H, I], topk_* [T, k]; out [T, H] or None (allocated)."""
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sgl

    from moep_sglang.kernels import gate_up_silu as gus

    t, k = topk_ids.shape
    e, i = w13.shape[0], w2.shape[2]
    config, down_config, down_tma, sorted_ids, expert_ids, post_padded = (
        sgl._prepare_fused_moe_run(
            x, w13, w2, topk_ids, use_fp8_w8a8=False, use_int8_w8a8=False,
            use_int8_w8a16=False, use_int4_w4a16=False, per_channel_quant=False,
            block_shape=None))
    rows = gus.padded_rows(t, k, e, config["BLOCK_SIZE_M"], down_tma)
    cache2 = torch.empty((rows, i), device=x.device, dtype=x.dtype)  # [rows, I] C2
    gus.gate_up_silu(x, w13, cache2, sorted_ids, expert_ids, post_padded, k,
                     gus.tile(config, i, x.element_size()), c_sorted=down_tma)
    cache3 = torch.empty((t, k, w2.shape[1]), device=x.device, dtype=x.dtype)  # [T, k, H] C3
    sgl.invoke_fused_moe_kernel(
        cache2, w2, None, cache3, None, None, None, topk_weights, topk_ids, sorted_ids,
        expert_ids, post_padded, True, 1, down_config or config,
        compute_type=gus.compute_type(x.dtype), use_fp8_w8a8=False, use_int8_w8a8=False,
        use_int8_w8a16=False, use_int4_w4a16=False, per_channel_quant=False, block_shape=None,
        a_use_tma=down_tma, b_use_tma=down_tma, filter_expert=filter_expert,
        fuse_sum_all_reduce=False, router_topk=k)
    if out is None:
        out = torch.empty_like(x)  # [T, H]
    sgl.moe_sum_reduce(cache3, out, scale)
    return out
