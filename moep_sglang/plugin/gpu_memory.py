"""The worker's GPU memory split: SGLang's `--mem-fraction-static` rule with the activation
reserve of a prefill-only batch (moep_sglang/server/memory.py) in place of its 1.5 MB per chunk
token. Active only where the launcher set MOEP_ACTIVATION_RESERVE_MB (it chose the batch size
and the user gave no `--mem-fraction-static`)."""

from __future__ import annotations

import logging

from moep_sglang import envs
from moep_sglang.server.memory import mem_fraction_with_reserve

logger = logging.getLogger("moep_sglang.plugin")


def reserve_for_activations(original, server_args, gpu_mem, *args, **kwargs):
    """AROUND ServerArgs._handle_gpu_memory_settings (gpu_mem: MB of the device, or None)."""
    reserve_mb = envs.activation_reserve_mb()
    given = server_args.mem_fraction_static is not None  # the user's value always wins
    result = original(server_args, gpu_mem, *args, **kwargs)
    if reserve_mb is None or given or not gpu_mem or server_args.post_capture_kv_sizing_planned():
        return result
    chunk = server_args.chunked_prefill_size  # what SGLang's rule counts tokens of
    sglang_tokens = chunk if chunk and chunk > 0 else server_args.max_prefill_tokens
    sglang_fraction = server_args.mem_fraction_static
    fraction = mem_fraction_with_reserve(sglang_fraction, gpu_mem, sglang_tokens, reserve_mb)
    if fraction != sglang_fraction:
        server_args.mem_fraction_static = fraction
        logger.info("moep: --mem-fraction-static %.3f (SGLang's rule: %.3f): %.0f MB kept for "
                    "a batch's activations instead of 1.5 MB x %d tokens", fraction,
                    sglang_fraction, reserve_mb, sglang_tokens)
    return result
