"""The hub's block FP8 format (Qwen3-*-FP8, DeepSeek-V3): float8_e4m3fn weights with one float32
`weight_scale_inv` per 128x128 block, w ~= q * scale_inv. Written by `make-model`, read back by
the CPU fallbacks of the plugin (moep_sglang.plugin.fp8_cpu)."""

from __future__ import annotations

FP8_BLOCK = (128, 128)  # [block_n, block_k]: the hub's `weight_block_size`
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def is_fp8_quantized(name: str) -> bool:
    """Whether the hub's FP8 checkpoints store tensor `name` in FP8: the linear projections of
    the decoder layers (attention and experts); not the router gate, norms, embeddings, LM head."""
    return name.startswith("model.layers.") and name.endswith("_proj.weight")


def quantize_block_fp8(w, block: tuple[int, int] = FP8_BLOCK):
    """w [..., N, K] float -> (q [..., N, K] float8_e4m3fn, scale_inv [..., ceil(N/bn), ceil(K/bk)]
    float32) with w ~= q * scale_inv over each bn x bk block (the hub's `weight_scale_inv`); on
    w's device (leading dims: experts)."""
    import torch

    bn, bk = block
    *lead, n, k = w.shape
    nb, kb = -(-n // bn), -(-k // bk)
    padded = torch.zeros(*lead, nb * bn, kb * bk, dtype=torch.float32, device=w.device)
    padded[..., :n, :k] = w.float()
    blocks = padded.view(*lead, nb, bn, kb, bk)  # [..., nb, bn, kb, bk]
    scale = blocks.abs().amax(dim=(-3, -1)).clamp(min=1e-12) / FP8_MAX  # [..., nb, kb]
    q = (blocks / scale[..., :, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(*lead, nb * bn, kb * bk)[..., :n, :k].contiguous(), scale


def dequantize_block_fp8(q, scale_inv, dtype, block: tuple[int, int] = FP8_BLOCK):
    """Inverse of `quantize_block_fp8`: q [..., N, K] fp8, scale_inv [..., N/bn, K/bk]
    -> [..., N, K] in `dtype` (leading dims: experts)."""
    n, k = q.shape[-2:]
    s = scale_inv.repeat_interleave(block[0], dim=-2)[..., :n, :]
    s = s.repeat_interleave(block[1], dim=-1)[..., :k]  # [..., N, K]
    return (q.float() * s).to(dtype)
