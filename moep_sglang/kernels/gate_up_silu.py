"""The MoE gate-up projection with SiLU-and-mul in its epilogue, for SGLang's Triton fused MoE.

SGLang's unquantized `fused_experts` runs four passes per layer over the (token, slot) rows
r = (t, j), which `moe_align_block_size` sorts by expert e(r) into blocks of BLOCK_M rows:

  C1[r] = W13[e(r)] x[t]               [T*k, 2I]  Triton fused_moe_kernel (gate | up)
  C2[r] = silu(C1[r, :I]) * C1[r, I:]  [T*k, I]   sgl-kernel act_and_mul
  C3[r] = w[r] * W2[e(r)] C2[r]        [T, k, H]  Triton fused_moe_kernel
  y[t]  = s * sum_j C3[t, j]           [T, H]     sgl-kernel moe_sum_reduce

`gate_up_silu` computes C2 in one pass: a program holds the gate columns [n, n+BN) and the
matching up columns [I+n, I+n+BN) of one block of rows as two fp32 accumulators over the same
tiles of x, rounds each to the activation dtype as C1 would be stored, and writes
silu(g) * u. C1 (T*k*2I values, written and read back once per layer: 0.8 GB at 32,768 tokens of
Qwen3-30B-A3B) never exists and the activation kernel's launch goes. With BLOCK_N = 128 per
accumulator (`tile`) a program of SGLang's usual 128 x 256 up-projection tile does the same loads
and MMAs as SGLang's.
`moep_sglang.plugin.routed_experts` runs SGLang's sequence with this pass in place of the first
two, and decides which calls take it; everything here is a function of its tensors.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


def _gate_up_silu_body(
    a_ptr, b_ptr, c_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    I, EM, num_valid_tokens,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cm, stride_cn,
    K: tl.constexpr,  # the hidden size: a model's constant (a Python loop bound in the interpreter)
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr, top_k: tl.constexpr, compute_type: tl.constexpr,
    even_Ks: tl.constexpr, c_sorted: tl.constexpr,
    # Triton's interpreter (CPU tests) has no bf16 dot: it upcasts; compiled kernels never do
    DOT_F32: tl.constexpr,
):
    """One [BLOCK_M, BLOCK_N] tile of C2. a: x [T, K]; b: W13 [E, 2I, K]; c: C2 [rows, I], row
    r of the sorted order (c_sorted: SGLang's TMA down GEMM reads C2 expert-sorted) or the flat
    (t, j) row t*k + j. The program order and row masking are SGLang's fused_moe_kernel's."""
    pid = tl.program_id(axis=0)
    # (no tl.cdiv: the interpreter runs only builtins, not the standard library's jit functions)
    num_pid_m = (EM + BLOCK_SIZE_M - 1) // BLOCK_SIZE_M
    num_pid_n = (I + BLOCK_SIZE_N - 1) // BLOCK_SIZE_N
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    num_tokens_post_padded = tl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= num_tokens_post_padded:
        return
    offs_token_id = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M).to(tl.int64)  # [BM]
    offs_token = tl.load(sorted_token_ids_ptr + offs_token_id).to(tl.int64)  # [BM] t*k + j
    token_mask = offs_token < num_valid_tokens  # padding rows: neither read nor written
    off_expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if off_expert == -1:
        return  # an expert of another rank (SGLang's filter): its down GEMM writes the zeros

    offs_n = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N).to(tl.int64)) % I  # [BN]
    offs_k = tl.arange(0, BLOCK_SIZE_K)  # [BK]
    a_ptrs = a_ptr + (offs_token[:, None] // top_k * stride_am
                      + offs_k[None, :] * stride_ak)  # [BM, BK]
    g_ptrs = (b_ptr + off_expert * stride_be
              + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn)  # [BK, BN] gate
    u_ptrs = g_ptrs + I * stride_bn  # [BK, BN] the up rows, I below the gate rows
    acc_g = tl.full((BLOCK_SIZE_M, BLOCK_SIZE_N), 0.0, dtype=tl.float32)  # (tl.zeros is one)
    acc_u = tl.full((BLOCK_SIZE_M, BLOCK_SIZE_N), 0.0, dtype=tl.float32)
    for k_start in range(0, K, BLOCK_SIZE_K):
        if even_Ks:
            a = tl.load(a_ptrs, mask=token_mask[:, None], other=0.0)
            g = tl.load(g_ptrs)
            u = tl.load(u_ptrs)
        else:
            k_mask = offs_k < K - k_start
            a = tl.load(a_ptrs, mask=token_mask[:, None] & k_mask[None, :], other=0.0)
            g = tl.load(g_ptrs, mask=k_mask[:, None], other=0.0)
            u = tl.load(u_ptrs, mask=k_mask[:, None], other=0.0)
        if DOT_F32:
            a, g, u = a.to(tl.float32), g.to(tl.float32), u.to(tl.float32)
        acc_g += tl.dot(a, g)
        acc_u += tl.dot(a, u)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        g_ptrs += BLOCK_SIZE_K * stride_bk
        u_ptrs += BLOCK_SIZE_K * stride_bk

    gate = acc_g.to(compute_type).to(tl.float32)  # [BM, BN] rounded as SGLang's C1 holds it
    up = acc_u.to(compute_type).to(tl.float32)  # [BM, BN]
    out = (gate / (1.0 + tl.exp(-gate)) * up).to(compute_type)  # [BM, BN] silu(g) * u
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    if c_sorted:
        c_ptrs = c_ptr + stride_cm * offs_token_id[:, None] + stride_cn * offs_cn[None, :]
    else:
        c_ptrs = c_ptr + stride_cm * offs_token[:, None] + stride_cn * offs_cn[None, :]
    tl.store(c_ptrs, out, mask=token_mask[:, None] & (offs_cn[None, :] < I))


@functools.cache
def _kernel(interpret: bool):
    """The compiled kernel, or Triton's interpreter of it (numpy on the host: CPU tensors)."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_gate_up_silu_body)
    return triton.jit(_gate_up_silu_body)


# Columns per accumulator. A sweep on one H100 (bench/results/gpu/h100_gate_up_silu.json: BLOCK_N
# 64 or 128, 3 or 4 stages, 4 or 8 warps, GROUP_SIZE_M 1 or 16, at 1,024-32,768 tokens) had 128
# in its fastest tile at every size of both shapes: Qwen3-30B-A3B (SGLang's tiles 64 x 128 and
# 128 x 256) and the 235B shape (SGLang's generic 64 x 64 tile).
BLOCK_N = 128
# Shared memory a tile's pipeline may take (Hopper: 227 KB per block; some room for the rest).
SMEM_BYTES = 220 * 1024


def tile(config: dict, inter: int, elem_bytes: int = 2) -> dict:
    """The kernel's tile for a call SGLang configured with `config` (its up-projection tile):
    the same BLOCK_M (the rows were aligned to it), BLOCK_K, GROUP_SIZE_M and warps; BLOCK_N
    columns per accumulator (fewer when the intermediate size is smaller); SGLang's stages, fewer
    where the A tile and the two B tiles per stage would pass SMEM_BYTES (a tile SGLang sized
    for one B tile of <= 128 columns can, e.g. 64 x 128 x 128 in 4 stages)."""
    bm, bk = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_K"]
    bn = min(BLOCK_N, max(16, triton.next_power_of_2(inter)))
    per_stage = (bm * bk + 2 * bk * bn) * elem_bytes  # A [BM, BK] + gate and up [BK, BN]
    stages = config.get("num_stages", 3)
    while stages > 2 and stages * per_stage > SMEM_BYTES:
        stages -= 1
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
            "GROUP_SIZE_M": config.get("GROUP_SIZE_M", 1),
            "num_warps": config.get("num_warps", 4), "num_stages": stages}


def padded_rows(tokens: int, top_k: int, num_experts: int, block_m: int, sorted_c: bool) -> int:
    """Rows of C2: T*k, plus SGLang's worst-case block padding when C2 is expert-sorted (its TMA
    down GEMM reads whole blocks)."""
    pad = min(tokens * top_k, num_experts + 1) * (block_m - 1) if sorted_c else 0
    return tokens * top_k + pad


def compute_type(dtype: torch.dtype):
    """Triton's type of the activations (bf16 or fp16)."""
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float16


def gate_up_silu(x: torch.Tensor, w13: torch.Tensor, out: torch.Tensor,
                 sorted_token_ids: torch.Tensor, expert_ids: torch.Tensor,
                 num_tokens_post_padded: torch.Tensor, top_k: int, config: dict,
                 c_sorted: bool = False) -> torch.Tensor:
    """out [rows, I] = silu(x W_gate^T) * (x W_up^T) per (token, slot) row, from
    x [T, H], w13 [E, 2I, H] (gate rows first) and SGLang's aligned routing
    (sorted_token_ids [EM], expert_ids [EM / BLOCK_M], num_tokens_post_padded [1]); `config`
    is the kernel's tile (`tile(...)`). CPU tensors run in Triton's interpreter (tests)."""
    t, h = x.shape
    i = w13.shape[1] // 2
    bm, bn = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"]
    em = sorted_token_ids.shape[0]  # EM: aligned rows, worst case (SGLang's grid, too)
    grid = (triton.cdiv(em, bm) * triton.cdiv(i, bn),)  # (row blocks x column blocks,)
    interpret = not x.is_cuda
    _kernel(interpret)[grid](
        x, w13, out, sorted_token_ids, expert_ids, num_tokens_post_padded,
        i, em, t * top_k,
        x.stride(0), x.stride(1), w13.stride(0), w13.stride(1), w13.stride(2),
        out.stride(0), out.stride(1),
        K=h, BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=config["BLOCK_SIZE_K"],
        GROUP_SIZE_M=config["GROUP_SIZE_M"], top_k=top_k,
        compute_type=compute_type(x.dtype), even_Ks=h % config["BLOCK_SIZE_K"] == 0,
        c_sorted=c_sorted, DOT_F32=interpret,
        num_warps=config["num_warps"], num_stages=config["num_stages"])
    return out
