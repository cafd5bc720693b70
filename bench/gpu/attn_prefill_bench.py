"""Prefill attention without a cached prefix: FlashAttention-3 over the paged KV cache (SGLang's
extend path, page size 1) against the same attention over the batch's own contiguous K/V.

SGLang's FA3 backend reads every extend's keys and values back from the paged pool through a page
table (`flash_attn_with_kvcache`), even when no request of the batch has a cached prefix, so the
keys it reads are exactly the ones it was just given. Its embedding mode alone
(`fa_skip_kv_cache`) calls `flash_attn_varlen_func` on the raw K/V instead. This times both calls
as the backend makes them, on one GPU, for the shapes of issue 11's workloads, and checks that
they agree. Needs the staged sgl_kernel (fa3). Usage:
  python bench/gpu/attn_prefill_bench.py --out DIR [--batch 8x4096 --batch 1x32768]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import print_table  # noqa: E402
from bench.gpu.kernel_timing import add_common_args, result_doc, time_ms  # noqa: E402

BATCHES = ("8x4096", "1x32768", "4x8192", "32x1024")
HEADS = ((32, 4, 128), (64, 4, 128))  # q heads, kv heads, head dim: Qwen3-30B-A3B, -235B-A22B


def bench(batch: str, heads: tuple[int, int, int], reps: int) -> dict:
    import torch
    from sglang.kernels.ops.attention.flash_attention import (
        flash_attn_varlen_func,
        flash_attn_with_kvcache,
    )

    n, length = (int(v) for v in batch.split("x"))
    hq, hkv, d = heads
    total = n * length
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(total, hq, d, generator=gen, device="cuda").to(torch.bfloat16)  # [T, Hq, D]
    k = torch.randn(total, hkv, d, generator=gen, device="cuda").to(torch.bfloat16)  # [T, Hkv, D]
    v = torch.randn(total, hkv, d, generator=gen, device="cuda").to(torch.bfloat16)
    seqlens = torch.full((n,), length, dtype=torch.int32, device="cuda")  # [B]
    cu = torch.zeros(n + 1, dtype=torch.int32, device="cuda")  # [B+1]
    cu[1:] = torch.cumsum(seqlens, 0)
    # the pool: slot 0 is SGLang's padding slot; a fresh pool hands out consecutive slots
    slots = torch.arange(1, total + 1, dtype=torch.int32, device="cuda")  # [T]
    k_cache = torch.zeros(total + 1, 1, hkv, d, dtype=torch.bfloat16, device="cuda")  # [S,1,Hkv,D]
    v_cache = torch.zeros_like(k_cache)
    k_cache[slots.long(), 0] = k
    v_cache[slots.long(), 0] = v
    page_table = slots.view(n, length)  # [B, max pages]: page size 1

    def paged():
        return flash_attn_with_kvcache(
            q=q, k_cache=k_cache, v_cache=v_cache, page_table=page_table, cache_seqlens=seqlens,
            cu_seqlens_q=cu, cu_seqlens_k_new=cu, max_seqlen_q=length,
            softmax_scale=d ** -0.5, causal=True)

    def contiguous():
        return flash_attn_varlen_func(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                      max_seqlen_q=length, max_seqlen_k=length,
                                      softmax_scale=d ** -0.5, causal=True)

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    diff = float((first(paged()).float() - first(contiguous()).float()).abs().max())
    paged_ms, contiguous_ms = time_ms(paged, reps), time_ms(contiguous, reps)
    flops = 4.0 * n * hq * d * length * length / 2  # causal: half the score matrix
    return {"batch": batch, "heads": list(heads), "paged_ms": round(paged_ms, 4),
            "contiguous_ms": round(contiguous_ms, 4),
            "paged_tflops": round(flops / paged_ms / 1e9, 1),
            "contiguous_tflops": round(flops / contiguous_ms / 1e9, 1),
            "speedup": round(paged_ms / contiguous_ms, 3), "max_abs_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", action="append", default=None, help="NxLEN (repeatable)")
    add_common_args(p, "attn_prefill_bench")
    args = p.parse_args()
    doc = result_doc(args)
    for heads in HEADS:
        for batch in args.batch or BATCHES:
            row = bench(batch, heads, args.reps)
            doc["rows"].append(row)
            (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))
    doc["table"] = print_table(doc["rows"], [
        ("batch", "batch", "s"), ("heads", "heads", ""), ("paged_ms", "paged ms", ".3f"),
        ("contiguous_ms", "contiguous ms", ".3f"), ("paged_tflops", "paged TFLOP/s", ".0f"),
        ("contiguous_tflops", "contiguous TFLOP/s", ".0f"), ("speedup", "x", ".3f"),
        ("max_abs_diff", "max abs diff", ".4f")])
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))

if __name__ == "__main__":
    main()
