"""Hook: with MOEP_GROUPED_MOE=1, SGLang's Triton `fused_experts` hands prefill-sized unquantized
calls on Hopper to torch's grouped GEMM (moep_sglang.kernels.grouped_moe); every other call runs
SGLang's code unchanged. Off by default: measured ~2% slower end to end on one H100
(Qwen3-30B-A3B, 32K-token batches: bench/results/gpu/h100_30b_one_gpu_split.json)."""

from __future__ import annotations

import functools

import torch

from moep_sglang import envs

# Below this many tokens in one call SGLang's kernel stays (decode, small prefill chunks).
MIN_TOKENS = 2048


@functools.cache
def _hopper(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] == 9


def skip_reason(hidden_states, w1, w2, topk_ids, config, quantized: bool, biased: bool,
                min_tokens: int = MIN_TOKENS) -> str | None:
    """Why this call keeps SGLang's kernel (None: it takes the grouped GEMM). Only what was
    measured and what the grouped path computes exactly as SGLang does is taken: bf16/fp16
    experts without biases or quantization, gated SiLU, no router weight on the input, every
    expert local (no expert parallelism: ids outside [0, E) would be filtered), a full combine."""
    if not envs.grouped_moe():
        return "MOEP_GROUPED_MOE is not 1"
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
    if config.num_experts is not None and config.num_experts != config.num_local_experts:
        return "expert parallelism (filtered experts)"
    if hidden_states.shape[0] < min_tokens:
        return f"{hidden_states.shape[0]} tokens < {min_tokens}"
    e, two_i, h = w1.shape
    if w2.shape != (e, h, two_i // 2) or hidden_states.shape[1] != h or h % 8 or two_i % 16:
        return "shapes the grouped GEMM does not take"
    if topk_ids.shape[0] != hidden_states.shape[0]:
        return "topk rows differ from tokens"
    if not hidden_states.is_cuda:
        return "not on a GPU"
    if not _hopper(hidden_states.device.index or 0):
        return "not a Hopper GPU"
    if torch.cuda.is_current_stream_capturing():
        return "inside CUDA-graph capture"
    return None


def grouped_first(original, hidden_states, w1, w2, topk_output, moe_runner_config, b1=None,
                  b2=None, use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
                  use_int4_w4a16=False, per_channel_quant=False, w1_scale=None, w2_scale=None,
                  w1_zp=None, w2_zp=None, a1_scale=None, a2_scale=None, block_shape=None,
                  a1_q=None):
    """AROUND fused_moe.fused_experts: same arguments, same return (hidden_states itself when
    the config is in place)."""
    topk_weights, topk_ids, _ = topk_output
    quantized = (use_fp8_w8a8 or use_int8_w8a8 or use_int8_w8a16 or use_int4_w4a16
                 or w1_scale is not None or a1_q is not None)
    reason = skip_reason(hidden_states, w1, w2, topk_ids, moe_runner_config, quantized,
                         b1 is not None or b2 is not None)
    if reason is not None:
        return original(hidden_states, w1, w2, topk_output, moe_runner_config, b1=b1, b2=b2,
                        use_fp8_w8a8=use_fp8_w8a8, use_int8_w8a8=use_int8_w8a8,
                        use_int8_w8a16=use_int8_w8a16, use_int4_w4a16=use_int4_w4a16,
                        per_channel_quant=per_channel_quant, w1_scale=w1_scale,
                        w2_scale=w2_scale, w1_zp=w1_zp, w2_zp=w2_zp, a1_scale=a1_scale,
                        a2_scale=a2_scale, block_shape=block_shape, a1_q=a1_q)
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_fused_moe

    from moep_sglang.kernels.grouped_moe import grouped_experts

    scale = moe_runner_config.routed_scaling_factor
    return grouped_experts(hidden_states, w1, w2, topk_weights, topk_ids,
                           out=hidden_states if moe_runner_config.inplace else None,
                           scale=1.0 if scale is None else float(scale),
                           act=sglang_fused_moe.silu_and_mul)
