"""The staged FlashAttention-3 (bench/gpu/trim_fa3.py) loads and computes attention: SGLang's
`flash_attn_varlen_func` on random bf16 inputs of the kept head dim, causal, against torch SDPA in
float32 (GPU machine). Prints the max abs error and exits non-zero past 2e-2."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from sgl_kernel.flash_attn import flash_attn_varlen_func


def main() -> None:
    torch.manual_seed(0)
    seqlens, heads, kv_heads, dim = [4096, 1000, 37], 32, 4, 128
    cu = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32,
                      device="cuda")
    total = sum(seqlens)
    q = torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16)  # [T, H, D]
    k = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16)  # [T, Hkv, D]
    v = torch.randn_like(k)
    out = flash_attn_varlen_func(q, k, v, cu, cu, max(seqlens), max(seqlens), causal=True)
    out = out[0] if isinstance(out, tuple) else out  # [T, H, D]
    err = 0.0
    for i, n in enumerate(seqlens):
        s = slice(cu[i].item(), cu[i + 1].item())
        qi, ki, vi = (t[s].transpose(0, 1).float() for t in (q, k, v))  # [H(kv), n, D]
        ki = ki.repeat_interleave(heads // kv_heads, 0)
        vi = vi.repeat_interleave(heads // kv_heads, 0)
        ref = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True)  # [H, n, D]
        err = max(err, (out[s].transpose(0, 1).float() - ref).abs().max().item())
    print(f"fa3 (staged) vs torch SDPA: max abs err {err:.4g} over {seqlens} tokens")
    sys.exit(0 if err < 2e-2 else 1)


if __name__ == "__main__":
    main()
