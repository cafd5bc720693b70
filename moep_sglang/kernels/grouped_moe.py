"""The routed experts of a MoE layer through torch's grouped GEMM instead of SGLang's Triton kernel.

SGLang's `fused_moe` runs each GEMM as one Triton kernel that reads its rows of the activations
through an index (tokens stay where they are). On one H100 the whole layer of the Qwen3-30B-A3B
shape ran at 415-432 TFLOP/s at 32,768 tokens (bench/results/gpu/tune_moe_h100_30b_down.json),
a dense GEMM of the card at ~790. Here the (token, slot) rows are first sorted by expert, so each
expert's rows are contiguous and torch's CUTLASS grouped GEMM (`torch._grouped_mm`, part of
libtorch: nothing to compile) runs both projections:

  order  = argsort(ids.flatten(), stable)     # [T*k]  (token, slot) rows by expert
  offs_e = sum_{e' <= e} |{rows of e'}|       # [E]    end of expert e's rows (int32)
  a      = x[order // k]                      # [T*k, H]   expert-contiguous copy of the tokens
  h      = grouped_mm(a, w13^T, offs)         # [T*k, 2I]  gate | up
  g      = silu(h[:, :I]) * h[:, I:]          # [T*k, I]
  y      = grouped_mm(g, w2^T, offs)          # [T*k, H]
  out_t  = s * sum_j w[t, j] * y[inv[t*k + j]]   with inv = order^-1       # [T, H]

The arithmetic is SGLang's (bf16 GEMMs with fp32 accumulation, the same activation, the
weighted sum in fp32), in another order of summation. `moep_sglang.plugin.routed_experts` decides
when a call may take this path; everything here is a pure function of its tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

# Hidden-dimension columns one program of the combine kernel sums.
_COMBINE_BLOCK = 1024


def route(topk_ids: torch.Tensor, num_experts: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """topk_ids [T, k] (every id in [0, E)) -> (order [T*k], offs [E] int32, inv [T*k]).
    No host synchronisation: counts come from a scatter-add, not bincount (which reads the
    maximum back to size its output)."""
    flat = topk_ids.reshape(-1).long()  # [T*k]
    order = torch.argsort(flat, stable=True)  # [T*k]
    counts = torch.zeros(num_experts, dtype=torch.int32, device=flat.device)  # [E]
    counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
    offs = torch.cumsum(counts, 0, dtype=torch.int32)  # [E]
    inv = torch.empty_like(order)  # [T*k]
    inv[order] = torch.arange(order.numel(), device=order.device)
    return order, offs, inv


def silu_and_mul_torch(h: torch.Tensor, out: torch.Tensor) -> None:
    """h [R, 2I] -> out [R, I] = silu(gate) * up (SGLang's fallback arithmetic)."""
    i = h.shape[1] // 2
    out.copy_(torch.nn.functional.silu(h[:, :i]) * h[:, i:])


@functools.cache
def _combine_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def combine(y_ptr, inv_ptr, w_ptr, out_ptr, H, scale, K: tl.constexpr, BLOCK: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < H
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for j in tl.static_range(K):
            row = tl.load(inv_ptr + t * K + j)
            wj = tl.load(w_ptr + t * K + j).to(tl.float32)
            acc += tl.load(y_ptr + row * H + cols, mask=mask, other=0.0).to(tl.float32) * wj
        tl.store(out_ptr + t * H + cols, (acc * scale).to(out_ptr.dtype.element_ty), mask=mask)

    return combine


def combine(y: torch.Tensor, inv: torch.Tensor, weights: torch.Tensor, out: torch.Tensor,
            scale: float = 1.0) -> torch.Tensor:
    """out[t] = scale * sum_j weights[t, j] * y[inv[t*k + j]], in fp32; y [T*k, H] sorted by
    expert, weights [T, k], out [T, H]; y and out contiguous (the kernel's row stride is H).
    One Triton pass on GPU, torch elsewhere."""
    t, k = weights.shape
    h = y.shape[1]
    if y.is_cuda:
        w = weights.to(torch.float32).contiguous()  # [T, k]
        grid = (t, -(-h // _COMBINE_BLOCK))  # [tokens, column blocks]
        _combine_kernel()[grid](y, inv, w, out, h, float(scale), K=k, BLOCK=_COMBINE_BLOCK)
        return out
    rows = y.index_select(0, inv).view(t, k, h).to(torch.float32)  # [T, k, H]
    summed = torch.einsum("tk,tkh->th", weights.to(torch.float32), rows) * scale  # [T, H]
    out.copy_(summed.to(out.dtype))
    return out


def gather_rows(x: torch.Tensor, order: torch.Tensor, top_k: int) -> torch.Tensor:
    """x [T, H] -> a [T*k, H]: the token of each (token, slot) row, in expert order."""
    return x.index_select(0, order // top_k)


def up_proj(a: torch.Tensor, w13: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """a [T*k, H], w13 [E, 2I, H] -> h [T*k, 2I]: each expert's rows times its gate|up."""
    return torch._grouped_mm(a, w13.transpose(1, 2), offs=offs)


def down_proj(g: torch.Tensor, w2: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """g [T*k, I], w2 [E, H, I] -> y [T*k, H]."""
    return torch._grouped_mm(g, w2.transpose(1, 2), offs=offs)


def activate(h: torch.Tensor, act: Callable[[torch.Tensor, torch.Tensor], None] = silu_and_mul_torch
             ) -> torch.Tensor:
    """h [T*k, 2I] -> g [T*k, I] through `act(h, out)` (SGLang's silu_and_mul on GPU)."""
    g = torch.empty((h.shape[0], h.shape[1] // 2), dtype=h.dtype, device=h.device)
    act(h, g)
    return g


def grouped_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                    topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
                    out: torch.Tensor | None = None, scale: float = 1.0,
                    act: Callable[[torch.Tensor, torch.Tensor], None] = silu_and_mul_torch,
                    ) -> torch.Tensor:
    """The routed experts' output [T, H] for x [T, H] (contiguous), w13 [E, 2I, H] (gate rows,
    then up rows), w2 [E, H, I], topk_weights/topk_ids [T, k]. `out` (contiguous [T, H]) may be
    x itself (SGLang's in-place call): x is read only by the gather, before anything is written."""
    order, offs, inv = route(topk_ids, w13.shape[0])
    a = gather_rows(x, order, topk_ids.shape[1])  # [T*k, H]
    h = up_proj(a, w13, offs)  # [T*k, 2I]
    del a  # its memory serves y below
    g = activate(h, act)  # [T*k, I]
    del h
    y = down_proj(g, w2, offs)  # [T*k, H]
    del g
    if out is None:
        out = torch.empty_like(x)  # [T, H]
    return combine(y, inv, topk_weights, out, scale)
