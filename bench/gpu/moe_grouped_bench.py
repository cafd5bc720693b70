"""The routed experts of one MoE layer as torch's grouped GEMM instead of SGLang's Triton kernel.

Issue 11 measured the whole Triton `fused_moe` of the Qwen3-30B-A3B shape at 415-432 TFLOP/s on
one H100 at 32,768 tokens (bench/results/gpu/tune_moe_h100_30b_down.json) against ~790 TFLOP/s
for a dense GEMM of the same card (shared/notes/device.md). This asks whether torch 2.11's
CUTLASS grouped GEMM (`torch._grouped_mm`, in libtorch: nothing to compile) does better once the
(token, slot) rows are sorted by expert: the pipeline of moep_sglang/kernels/grouped_moe.py (the
plugin's path; its docstring has it as math). Each stage is timed alone (CUDA events, median of
--reps) and the whole against SGLang's `fused_moe` on the same inputs where SGLang is installed
(with whatever config files the environment points it to, MOEP_MOE_CONFIG_DIR included), with
the largest difference of their outputs. Needs only torch and Triton otherwise.
Usage: python bench/gpu/moe_grouped_bench.py --out DIR [--shape 128,768,2048,8] [--tokens ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import print_table  # noqa: E402
from bench.gpu.kernel_timing import (  # noqa: E402
    MOE_SHAPES, add_common_args, add_moe_args, moe_batch, moe_layer, result_doc, time_ms)

from moep_sglang.kernels import grouped_moe  # noqa: E402

TOKENS = (4096, 8192, 16384, 32768)


def sglang_fused_moe():
    """SGLang's fused_moe(x, w13, w2, weights, ids, path) as its Triton runner calls it, with
    moep's plugin loaded (its tuned configs, and its routed-experts hook taking `path`: None for
    SGLang's own kernels, "grouped" or "gate_up_silu"), or None where SGLang is not installed."""
    try:
        from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
        from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_moe
        from sglang.srt.layers.moe.topk import StandardTopKOutput
        from sglang.srt.plugins import load_plugins
    except Exception as exc:  # noqa: BLE001 - any import failure: no SGLang row
        print(f"no SGLang row: {exc}", flush=True)
        return None
    from bench.gpu.tune_moe import publish_server_args
    from moep_sglang.models.checkpoint import ensure_model

    publish_server_args(ensure_model(Path("/tmp/moep-models"), "qwen3-30b-a3b"))
    load_plugins()

    def run(x, w13, w2, weights, ids, path: str | None):
        # the switches are read at every call
        os.environ["MOEP_GROUPED_MOE"] = "1" if path == "grouped" else "0"
        os.environ["MOEP_FUSED_MOE_ACT"] = "1" if path == "gate_up_silu" else "0"
        # in place, on a copy (as tune_moe.py does): SGLang's out-of-place path allocates its
        # output through the tensor-parallel group, which a bare process has not initialised
        e = w13.shape[0]  # every expert local: SGLang filters no ids, the hook may take it
        return fused_moe(x.clone(), w13, w2, StandardTopKOutput(weights, ids, None),
                         MoeRunnerConfig(num_experts=e, num_local_experts=e, inplace=True))

    return run


def bench_shape(spec: str, tokens: list[int], reps: int, sglang, act) -> list[dict]:
    import torch

    e, i, h, k, w13, w2, gen = moe_layer(spec)  # w13 [E, 2I, H], w2 [E, H, I]
    rows = []
    for t in tokens:
        x, weights, ids = moe_batch(t, e, h, k, gen)  # [T, H], [T, k], [T, k]
        out = torch.empty_like(x)
        order, offs, inv = grouped_moe.route(ids, e)
        a = grouped_moe.gather_rows(x, order, k)
        hh = grouped_moe.up_proj(a, w13, offs)
        g = grouped_moe.activate(hh, act)
        y = grouped_moe.down_proj(g, w2, offs)
        stages = {
            "route": time_ms(lambda: grouped_moe.route(ids, e), reps),
            "gather": time_ms(lambda: grouped_moe.gather_rows(x, order, k), reps),
            "up_gemm": time_ms(lambda: grouped_moe.up_proj(a, w13, offs), reps),
            "act": time_ms(lambda: grouped_moe.activate(hh, act), reps),
            "down_gemm": time_ms(lambda: grouped_moe.down_proj(g, w2, offs), reps),
            "combine": time_ms(lambda: grouped_moe.combine(y, inv, weights, out), reps),
        }
        # the same GEMMs with the weights stored [E, K, N] (row-major B) instead of the
        # checkpoint's [E, N, K] read transposed: which layout CUTLASS's grouped GEMM prefers
        w13_kn, w2_kn = w13.transpose(1, 2).contiguous(), w2.transpose(1, 2).contiguous()
        stages["up_gemm_b_kn"] = time_ms(lambda: torch._grouped_mm(a, w13_kn, offs=offs), reps)
        stages["down_gemm_b_kn"] = time_ms(lambda: torch._grouped_mm(g, w2_kn, offs=offs), reps)
        del w13_kn, w2_kn
        total = time_ms(lambda: grouped_moe.grouped_experts(x, w13, w2, weights, ids, act=act), reps)
        flops = 2.0 * t * k * 3 * h * i
        row = {"shape": spec, "tokens": t, "grouped_ms": round(total, 4),
               "grouped_tflops": round(flops / total / 1e9, 1),
               "stages_ms": {n: round(v, 4) for n, v in stages.items()},
               "up_gemm_tflops": round(2.0 * t * k * h * 2 * i / stages["up_gemm"] / 1e9, 1),
               "down_gemm_tflops": round(2.0 * t * k * i * h / stages["down_gemm"] / 1e9, 1)}
        if sglang is not None:
            ref = sglang(x, w13, w2, weights, ids, None)
            hooked = sglang(x, w13, w2, weights, ids, "grouped")  # through the plugin's hook
            sg_ms = time_ms(lambda: sglang(x, w13, w2, weights, ids, None), reps)
            hooked_ms = time_ms(lambda: sglang(x, w13, w2, weights, ids, "grouped"), reps)
            row.update({"sglang_ms": round(sg_ms, 4),
                        "sglang_tflops": round(flops / sg_ms / 1e9, 1),
                        "hooked_ms": round(hooked_ms, 4),
                        "speedup": round(sg_ms / hooked_ms, 3),
                        "max_abs_diff": float((hooked.float() - ref.float()).abs().max()),
                        "ref_abs_max": float(ref.float().abs().max())})
        rows.append(row)
        print(json.dumps(row), flush=True)
        del x, out, a, hh, g, y
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    add_moe_args(p, TOKENS)
    add_common_args(p, "moe_grouped_bench")
    args = p.parse_args()
    tokens = [int(v) for v in args.tokens.split(",")]
    doc = result_doc(args)
    sglang = sglang_fused_moe()
    act = grouped_moe.silu_and_mul_torch
    if sglang is not None:  # the activation kernel SGLang's own path runs
        from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_module

        act = sglang_module.silu_and_mul
    doc["activation"] = f"{act.__module__}.{act.__name__}"
    for spec in args.shape or MOE_SHAPES:
        doc["rows"] += bench_shape(spec, tokens, args.reps, sglang, act)
        (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))
    doc["table"] = print_table(doc["rows"], [
        ("shape", "shape", "s"), ("tokens", "tokens", "d"), ("grouped_ms", "grouped ms", ".3f"),
        ("grouped_tflops", "TFLOP/s", ".0f"), ("up_gemm_tflops", "up GEMM TFLOP/s", ".0f"),
        ("down_gemm_tflops", "down GEMM TFLOP/s", ".0f"), ("sglang_ms", "SGLang ms", ".3f"),
        ("hooked_ms", "hooked ms", ".3f"), ("speedup", "x", ".3f"),
        ("max_abs_diff", "max abs diff", ".4f")])
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))

if __name__ == "__main__":
    main()
