"""Hook: SGLang's fused-MoE config lookup tries moep's tuned configs first (moep_sglang.kernels)."""

from __future__ import annotations


def tuned_first(original, E, N, dtype, block_n=0, block_k=0, per_channel_quant=False,
                down_moe=False):
    """AROUND fused_moe_triton_config.get_moe_configs: same arguments, same return shape."""
    import triton
    from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config import (
        get_config_file_name,
    )

    from moep_sglang.kernels.moe_configs import find_config

    name = get_config_file_name(E, N, dtype, [block_n, block_k], per_channel_quant,
                                down_moe=down_moe)
    found = find_config(name, triton.__version__)
    if found is not None:
        return found
    return original(E, N, dtype, block_n, block_k, per_channel_quant=per_channel_quant,
                    down_moe=down_moe)
