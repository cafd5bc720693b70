"""Block-FP8 checkpoints on CPUs without AMX: weights stay FP8, matmuls run on dequantized copies.

SGLang 0.5.17 runs FP8 linear and MoE layers on CPU only through its AMX kernels
(`fp8_scaled_mm_cpu`, `fused_experts_cpu` with FP8_W8A16); elsewhere `process_weights_after_loading`
asserts "requires that CPU has AMX support" and the worker dies at startup. On such CPUs (CI's, and
this project's machines) we keep the loaded tensors untouched (q [N, K] float8_e4m3fn with
`weight_scale_inv` [N/128, K/128], the hub's layout) and, per call, dequantize the layer's weights
to the activation dtype and run torch's matmul: weight-only FP8 (W8A16), the same arithmetic as
SGLang's AMX path, slower. Where AMX exists, or on a GPU, SGLang's own kernels run unchanged.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

from moep_sglang.models.fp8 import dequantize_block_fp8


@cache
def _amx() -> bool:
    from sglang.srt.utils import cpu_has_amx_support

    return bool(cpu_has_amx_support())


def _fallback(method, layer) -> bool:
    """Whether this block-FP8 layer lives on a CPU without AMX (our path), not SGLang's."""
    weight = getattr(layer, "w13_weight", None)
    if weight is None:
        weight = layer.weight
    return (weight.device.type == "cpu" and not _amx()
            and getattr(method, "block_quant", False) and not getattr(method, "use_mxfp8", False))


def keep_linear_weights(original, method, layer, *args, **kwargs):
    """AROUND Fp8LinearMethod.process_weights_after_loading_block_quant: keep q and scales."""
    if not _fallback(method, layer):
        return original(method, layer, *args, **kwargs)
    return None


def linear(original, method, layer, x, bias=None, *args, **kwargs):
    """AROUND Fp8LinearMethod.apply.

    x:      [tokens, K] activations
    weight: [N, K] float8_e4m3fn, weight_scale_inv [N/128, K/128] float32
    ->      [tokens, N] in x's dtype
    """
    if not _fallback(method, layer) or isinstance(x, tuple):
        return original(method, layer, x, bias, *args, **kwargs)
    import torch.nn.functional as F

    w = dequantize_block_fp8(layer.weight, layer.weight_scale_inv, x.dtype,
                             tuple(method.weight_block_size))  # [N, K]
    return F.linear(x, w, bias)


def keep_moe_weights(original, method, layer, *args, **kwargs):
    """AROUND Fp8MoEMethod.process_weights_after_loading_block_quant: keep q and scales."""
    if not _fallback(method, layer):
        return original(method, layer, *args, **kwargs)
    return None


def moe(original, method, layer, dispatch_output, *args, **kwargs):
    """AROUND Fp8MoEMethod.apply: SGLang's torch MoE (`moe_forward_native`) over the layer's
    experts dequantized for this call (under AsyncEP: the full gathered layer).

    w13_weight [E, 2I, H] fp8, w13_weight_scale_inv [E, 2I/128, H/128]
    w2_weight  [E, H, I]  fp8, w2_weight_scale_inv  [E, H/128, I/128]
    hidden_states [tokens, H] -> [tokens, H]
    """
    if not _fallback(method, layer):
        return original(method, layer, dispatch_output, *args, **kwargs)
    from sglang.srt.layers.moe.fused_moe_native import moe_forward_native
    from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput

    x = dispatch_output.hidden_states
    block = tuple(method.quant_config.weight_block_size)
    experts = SimpleNamespace(
        num_experts=layer.w13_weight.shape[0],
        w13_weight=dequantize_block_fp8(layer.w13_weight, layer.w13_weight_scale_inv, x.dtype,
                                        block),  # [E, 2I, H]
        w2_weight=dequantize_block_fp8(layer.w2_weight, layer.w2_weight_scale_inv, x.dtype,
                                       block),  # [E, H, I]
    )
    out = moe_forward_native(experts, x, dispatch_output.topk_output, method.moe_runner_config)
    return StandardCombineInput(hidden_states=out)
