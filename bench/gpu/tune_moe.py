"""Tune SGLang's fused-MoE Triton kernel for prefill-sized batches on this GPU.

For each shape (experts E, intermediate size per rank N, hidden size K, top-k) and batch size M
(tokens in one forward), times SGLang's own `fused_moe` (align, both GEMMs, activation, combine)
under every candidate tile config and under the config SGLang picks by itself (its file lookup,
else its generic default), checks the winner's output against SGLang's choice, and writes:
  <out>/configs/triton_<ver>/E=..,N=..,device_name=<GPU>.json   SGLang's format: {M: config}
  <out>/tune_moe_<gpu>.json                                     per shape and M: both times
Entries of SGLang's own file below the tuned range of M are kept (decode-sized batches).
Compiling dominates (two kernels per config): `--compile-workers` processes compile the
candidates into Triton's on-disk cache first, then one process times them all.
Usage: python bench/gpu/tune_moe.py --shape 128,768,2048,8 --shape 128,1536,4096,8 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

BATCH_SIZES = (2048, 4096, 8192, 16384, 32768)
SMEM_BYTES = 227 * 1024  # H100/H200 shared memory per block (opt-in)


@dataclass(frozen=True)
class Shape:
    experts: int  # E: experts in the layer (per rank under EP)
    inter: int  # N: expert intermediate size per rank (w2's last dim)
    hidden: int  # K: model width
    top_k: int  # experts per token

    @classmethod
    def parse(cls, text: str) -> Shape:
        e, n, k, t = (int(x) for x in text.split(","))
        return cls(e, n, k, t)

    def flops(self, m: int) -> float:
        """Both GEMMs of the routed experts: 2 * M*top_k * (K*2N + N*K)."""
        return 2.0 * m * self.top_k * 3 * self.hidden * self.inter


def search_space() -> list[dict]:
    """Prefill tiles: >= 64 rows per block; pruned by shared memory (bf16, num_stages deep)."""
    space = []
    for bm in (64, 128):
        for bn in (64, 128, 256):
            for bk in (64, 128):
                for stages in (3, 4):
                    if (bm * bk + bk * bn) * 2 * stages > SMEM_BYTES:
                        continue
                    warps = 8 if bm * bn >= 128 * 128 else 4
                    for group in (1, 16):
                        space.append({"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
                                      "GROUP_SIZE_M": group, "num_warps": warps,
                                      "num_stages": stages})
    return space


SMALL_M = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # decode-sized batches, not tuned here
TRITON_DEFAULTS = {"num_warps": 4, "num_stages": 3}  # what Triton runs where a config omits them


def merge_table(tuned: dict[int, dict], sglang_table: dict[int, dict] | None,
                default_for=None) -> dict[str, dict]:
    """Our entries for the tuned M; below the smallest tuned M, SGLang's own file's entries or,
    without a file, SGLang's generic default for each M of SMALL_M (`default_for(m)`), so a
    decode-sized batch keeps the tile SGLang would have given it."""
    table = {}
    low = min(tuned)
    below = dict(sglang_table or {})
    if not below and default_for is not None:
        below = {m: {**TRITON_DEFAULTS, **default_for(m)} for m in SMALL_M}
    for m, cfg in sorted(below.items()):
        if m < low:
            table[str(m)] = cfg
    for m, cfg in sorted(tuned.items()):
        table[str(m)] = cfg
    return table


class Bench:
    """SGLang's fused_moe on random bf16 data of one shape (GPU only)."""

    def __init__(self, shape: Shape, max_m: int):
        import torch

        from sglang.srt.layers.moe.topk import StandardTopKOutput

        self.torch = torch
        self.shape = shape
        gen = torch.Generator(device="cuda").manual_seed(0)
        e, n, k = shape.experts, shape.inter, shape.hidden
        dev, bf16 = "cuda", torch.bfloat16
        # w1: [E, 2N, K] (gate and up), w2: [E, K, N], x: [M, K]; std 1/sqrt(fan-in)
        self.w1 = (torch.randn(e, 2 * n, k, generator=gen, device=dev) / k ** 0.5).to(bf16)
        self.w2 = (torch.randn(e, k, n, generator=gen, device=dev) / n ** 0.5).to(bf16)
        self.x = torch.randn(max_m, k, generator=gen, device=dev).to(bf16)
        logits = torch.randn(max_m, e, generator=gen, device=dev)  # [M, E] uniform routing
        weights, ids = torch.topk(torch.softmax(logits, dim=-1), shape.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)  # [M, top_k]
        self.topk = StandardTopKOutput(weights, ids.to(torch.int32), logits)

    def run(self, m: int, config: dict | None):
        from sglang.srt.layers.moe.fused_moe_triton import override_config
        from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
        from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_moe
        from sglang.srt.layers.moe.topk import StandardTopKOutput

        x = self.x[:m].clone()  # fused_moe writes its output in place
        topk = StandardTopKOutput(*(t[:m] for t in self.topk))
        if config is None:  # SGLang's own choice (file lookup, else default)
            return fused_moe(x, self.w1, self.w2, topk, MoeRunnerConfig(inplace=True))
        with override_config(config):
            return fused_moe(x, self.w1, self.w2, topk, MoeRunnerConfig(inplace=True))

    def time_ms(self, m: int, config: dict | None) -> float:
        import triton

        return triton.testing.do_bench(lambda: self.run(m, config), warmup=20, rep=80,
                                       return_mode="median")


def sglang_choice(shape: Shape, m: int) -> tuple[dict, str]:
    """The config SGLang itself would run at M (without moep's hook), and where it came from."""
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe_triton_config as cfgmod

    table = cfgmod.get_moe_configs(shape.experts, shape.inter, None)
    if table:
        return table[min(table, key=lambda x: abs(x - m))], "sglang file"
    cfg = cfgmod.get_default_config(m, shape.experts, shape.inter, shape.hidden, shape.top_k,
                                    None, False, None)
    return cfg, "sglang default"


def publish_server_args(model_dir: Path) -> None:
    """fused_moe reads SGLang's published runtime config (as SGLang's own tuning script does)."""
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    set_global_server_args_for_scheduler(ServerArgs(model_path=str(model_dir)))


def compile_part(shapes: list[Shape], part: int, parts: int) -> None:
    """Run every `parts`-th candidate once at a small M: fills Triton's on-disk cache."""
    space = search_space()
    for shape in shapes:
        bench = Bench(shape, 512)
        for cfg in space[part::parts]:
            try:
                bench.run(512, cfg)
            except Exception as exc:  # an invalid tile is skipped later too
                print(f"compile {cfg}: {type(exc).__name__}", flush=True)
        bench.torch.cuda.synchronize()
        del bench  # this shape's weights, before the next shape's


def tune(shape: Shape, batch_sizes: list[int]) -> tuple[dict, list[dict]]:
    import torch
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe_triton_config as cfgmod

    bench = Bench(shape, max(batch_sizes))
    tuned, rows = {}, []
    for m in batch_sizes:
        base_cfg, source = sglang_choice(shape, m)
        base_ms = bench.time_ms(m, base_cfg)
        best_cfg, best_ms = base_cfg, base_ms
        for cfg in search_space():
            try:
                ms = bench.time_ms(m, cfg)
            except Exception:  # out of resources / not compilable: not a candidate
                continue
            if ms < best_ms:
                best_cfg, best_ms = cfg, ms
        ref = bench.run(m, base_cfg).float()
        out = bench.run(m, best_cfg).float()
        rel = (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()
        if not rel < 2e-2:
            raise SystemExit(f"{shape} M={m}: tuned output differs from SGLang's by {rel:.2e}")
        tuned[m] = {**TRITON_DEFAULTS, **best_cfg}
        rows.append({"M": m, "sglang_config": base_cfg, "sglang_source": source,
                     "sglang_ms": base_ms, "sglang_tflops": shape.flops(m) / base_ms / 1e9,
                     "tuned_config": best_cfg, "tuned_ms": best_ms,
                     "tuned_tflops": shape.flops(m) / best_ms / 1e9,
                     "speedup": base_ms / best_ms, "rel_diff": rel})
        print(f"E={shape.experts} N={shape.inter} K={shape.hidden} M={m:6d}: SGLang ({source}) "
              f"{base_ms:7.3f} ms {rows[-1]['sglang_tflops']:5.0f} TFLOP/s -> tuned "
              f"{best_ms:7.3f} ms {rows[-1]['tuned_tflops']:5.0f} TFLOP/s "
              f"({rows[-1]['speedup']:.2f}x)", flush=True)
    existing = cfgmod.get_moe_configs(shape.experts, shape.inter, None)
    return merge_table(tuned, existing, lambda m: cfgmod.get_default_config(
        m, shape.experts, shape.inter, shape.hidden, shape.top_k, None, False, None)), rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", action="append", required=True, type=Shape.parse,
                   help="E,N,K,top_k (repeat)")
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="any model config dir for SGLang's ServerArgs (default: qwen3-30b-a3b)")
    p.add_argument("--compile-workers", type=int, default=8)
    p.add_argument("--compile-part", default=None, help=argparse.SUPPRESS)  # "i/n", internal
    p.add_argument("--git-sha", default="unknown")
    args = p.parse_args()
    if args.model_dir is None:
        from moep_sglang.models.checkpoint import ensure_model

        args.model_dir = ensure_model(Path("/tmp/moep-models"), "qwen3-30b-a3b")
    publish_server_args(args.model_dir)
    if args.compile_part:
        i, n = (int(x) for x in args.compile_part.split("/"))
        compile_part(args.shape, i, n)
        return

    import torch
    import triton

    started = time.monotonic()
    if args.compile_workers > 1:
        cmd = [sys.executable, __file__, "--out", str(args.out), "--model-dir",
               str(args.model_dir)] + [f"--shape={s.experts},{s.inter},{s.hidden},{s.top_k}"
                                       for s in args.shape]
        procs = [subprocess.Popen(cmd + [f"--compile-part={i}/{args.compile_workers}"])
                 for i in range(args.compile_workers)]
        if any(proc.wait() for proc in procs):
            raise SystemExit("a compile worker failed (see above)")
    compile_s = time.monotonic() - started
    from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config import (
        get_config_file_name,
    )

    gpu = torch.cuda.get_device_name(0)
    folder = args.out / "configs" / ("triton_" + triton.__version__.replace(".", "_"))
    folder.mkdir(parents=True, exist_ok=True)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    report = {"benchmark": "tune_moe", "git_sha": args.git_sha, "gpu": gpu,
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "triton": triton.__version__, "search_space": len(search_space()),
              "compile_s": round(compile_s, 1), "shapes": []}
    for shape in args.shape:
        table, rows = tune(shape, batch_sizes)
        name = get_config_file_name(shape.experts, shape.inter, None)
        (folder / name).write_text(json.dumps(table, indent=4) + "\n")
        report["shapes"].append({"shape": vars(shape), "file": name, "rows": rows})
    report["total_s"] = round(time.monotonic() - started, 1)
    tag = gpu.replace(" ", "_") + "_" + "_".join(f"E{s.experts}N{s.inter}" for s in args.shape)
    (args.out / f"tune_moe_{tag}.json").write_text(json.dumps(report, indent=2))
    print(f"tuned {len(args.shape)} shapes in {report['total_s']} s (compile {compile_s:.0f} s)")


if __name__ == "__main__":
    main()
