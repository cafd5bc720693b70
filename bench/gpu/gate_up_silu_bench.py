"""The MoE layer with its gate-up GEMM and SiLU-and-mul in one Triton kernel, against SGLang's.

moep_sglang/kernels/gate_up_silu.py replaces the first two of SGLang's four passes over a MoE
layer's (token, slot) rows (its docstring has the math). Per shape and batch size this times,
with CUDA events (median of --reps):
  - the whole layer through SGLang's `fused_moe` with the plugin loaded: SGLang's kernels
    (`sglang_ms`) and the plugin's gate_up_silu path (`fused_ms`), their largest output
    difference;
  - the two passes alone: SGLang's up GEMM + silu_and_mul (`sglang_up_act_ms`) against the merged
    kernel with the tile the plugin derives (`fused_up_act_ms`);
  - the merged kernel under a small sweep of tiles (same BLOCK_M: the rows are aligned to it), to
    show whether the derived tile is the one to keep.
Usage: python bench/gpu/gate_up_silu_bench.py --out DIR [--shape 128,768,2048,8] [--tokens ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import print_table  # noqa: E402
from bench.gpu.kernel_timing import (  # noqa: E402
    MOE_SHAPES, add_common_args, add_moe_args, moe_batch, moe_layer, result_doc, time_ms)
from bench.gpu.moe_grouped_bench import sglang_fused_moe  # noqa: E402

TOKENS = (1024, 4096, 8192, 32768)
SWEEP = {"BLOCK_SIZE_N": (64, 128), "num_stages": (3, 4), "num_warps": (4, 8),
         "GROUP_SIZE_M": (1, 16)}


def _two_passes(x, w13, ids, weights, config, down_tma):
    """SGLang's first GEMM into C1 and its activation into C2, as its sequence runs them."""
    import torch
    import triton.language as tl
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sgl

    from moep_sglang.kernels import gate_up_silu as gus

    t, k = ids.shape
    e, two_i, _ = w13.shape
    sorted_ids, expert_ids, post = sgl.moe_align_block_size(ids, config["BLOCK_SIZE_M"], e)
    rows = gus.padded_rows(t, k, e, config["BLOCK_SIZE_M"], down_tma)
    c1 = torch.empty(rows, two_i, device="cuda", dtype=x.dtype)  # [rows, 2I]
    c2 = torch.empty(rows, two_i // 2, device="cuda", dtype=x.dtype)  # [rows, I]

    def sglang_passes():
        sgl.invoke_fused_moe_kernel(
            x, w13, None, c1, None, None, None, weights, ids, sorted_ids, expert_ids, post,
            False, k, config, compute_type=tl.bfloat16, use_fp8_w8a8=False,
            use_int8_w8a8=False, use_int8_w8a16=False, use_int4_w4a16=False,
            per_channel_quant=False, block_shape=None, c_sorted=down_tma, filter_expert=False)
        sgl.silu_and_mul(c1.view(-1, two_i), c2)

    def fused(tile):
        return lambda: gus.gate_up_silu(x, w13, c2, sorted_ids, expert_ids, post, k, tile,
                                        c_sorted=down_tma)

    return sglang_passes, fused


def bench_shape(spec: str, tokens: list[int], reps: int, sglang) -> list[dict]:
    import torch
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sgl

    from moep_sglang.kernels import gate_up_silu as gus

    e, i, h, k, w13, w2, gen = moe_layer(spec)  # w13 [E, 2I, H], w2 [E, H, I]
    rows = []
    for t in tokens:
        x, weights, ids = moe_batch(t, e, h, k, gen)  # [T, H], [T, k], [T, k]
        config, down_config, down_tma, *_ = sgl._prepare_fused_moe_run(
            x, w13, w2, ids, use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
            use_int4_w4a16=False, per_channel_quant=False, block_shape=None)
        derived = gus.tile(config, i)
        ref = sglang(x, w13, w2, weights, ids, None)
        got = sglang(x, w13, w2, weights, ids, "gate_up_silu")  # through the plugin's hook
        sg_ms = time_ms(lambda: sglang(x, w13, w2, weights, ids, None), reps)
        fused_ms = time_ms(lambda: sglang(x, w13, w2, weights, ids, "gate_up_silu"), reps)
        passes, fused = _two_passes(x, w13, ids, weights, config, down_tma)
        up_act_ms = time_ms(passes, reps)
        fused_up_ms = time_ms(fused(derived), reps)
        sweep = []
        for values in itertools.product(*SWEEP.values()):
            tile = {**derived, **dict(zip(SWEEP, values))}
            try:
                sweep.append((time_ms(fused(tile), reps), tile))
            except Exception as exc:  # noqa: BLE001 - a tile that does not fit: skip it
                print(f"tile {tile} failed: {type(exc).__name__}", flush=True)
        best_ms, best = min(sweep, key=lambda p: p[0]) if sweep else (None, None)
        flops = 2.0 * t * k * 3 * h * i
        up_flops = 2.0 * t * k * h * 2 * i
        row = {"shape": spec, "tokens": t, "sglang_config": config,
               "down_config": down_config, "down_tma": down_tma, "derived_tile": derived,
               "sglang_ms": round(sg_ms, 4), "fused_ms": round(fused_ms, 4),
               "speedup": round(sg_ms / fused_ms, 3),
               "sglang_tflops": round(flops / sg_ms / 1e9, 1),
               "fused_tflops": round(flops / fused_ms / 1e9, 1),
               "sglang_up_act_ms": round(up_act_ms, 4), "fused_up_act_ms": round(fused_up_ms, 4),
               "up_act_speedup": round(up_act_ms / fused_up_ms, 3),
               "fused_up_tflops": round(up_flops / fused_up_ms / 1e9, 1),
               "best_tile": best, "best_tile_ms": None if best_ms is None else round(best_ms, 4),
               "best_vs_derived": None if best_ms is None else round(fused_up_ms / best_ms, 3),
               "max_abs_diff": float((got.float() - ref.float()).abs().max()),
               "ref_abs_max": float(ref.float().abs().max())}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del x, ref, got
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    add_moe_args(p, TOKENS)
    add_common_args(p, "gate_up_silu_bench")
    args = p.parse_args()
    tokens = [int(v) for v in args.tokens.split(",")]
    doc = result_doc(args)
    sglang = sglang_fused_moe()
    if sglang is None:
        sys.exit("needs SGLang (its fused MoE is the baseline and runs the down GEMM)")
    for spec in args.shape or MOE_SHAPES:
        doc["rows"] += bench_shape(spec, tokens, args.reps, sglang)
        (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))
    doc["table"] = print_table(doc["rows"], [
        ("shape", "shape", "s"), ("tokens", "tokens", "d"), ("sglang_ms", "SGLang layer ms", ".3f"),
        ("fused_ms", "ours ms", ".3f"), ("speedup", "x", ".3f"),
        ("sglang_up_act_ms", "SGLang up+act ms", ".3f"), ("fused_up_act_ms", "merged ms", ".3f"),
        ("up_act_speedup", "x", ".3f"), ("best_vs_derived", "best tile x", ".3f"),
        ("max_abs_diff", "max abs diff", ".4f")])
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
