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
With --fp8-block the experts are the hub's block FP8 (float8_e4m3fn, float32 scales per 128x128
block, activations quantized per token group: SGLang's w8a8 kernel) and the file is SGLang's
`...,dtype=fp8_w8a8,block_shape=[128, 128].json`; tiles then divide the 128x128 block.
With --down it tunes the second GEMM alone (SGLang 0.5.17's optional `..._down.json`): the up
projection keeps the tile the server would look up (ours, else SGLang's), and each candidate
gives the down projection its own N/K tile, stages, warps and `USE_TMA` (TMA loads; the up GEMM
then writes its output expert-sorted); BLOCK_SIZE_M stays the up tile's (both share one sort).
Each time is the whole `fused_moe` again, against no down file (both GEMMs on the up tile).
Usage: python bench/gpu/tune_moe.py --shape 128,768,2048,8 --shape 128,1536,4096,8 --out DIR
       python bench/gpu/tune_moe.py --down --shape 128,768,2048,8 --batch-sizes 8192,32768 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
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


FP8_BLOCK = [128, 128]


@dataclass(frozen=True)
class Quant:
    """The expert format tuned: bf16, or block FP8 (SGLang's dtype string and block shape)."""
    fp8_block: bool = False

    @property
    def dtype(self) -> str | None:
        return "fp8_w8a8" if self.fp8_block else None

    @property
    def block(self) -> list[int] | None:
        return FP8_BLOCK if self.fp8_block else None

    @property
    def element_bytes(self) -> int:
        return 1 if self.fp8_block else 2


def search_space(quant: Quant = Quant()) -> list[dict]:
    """Prefill tiles: >= 64 rows per block; pruned by shared memory (num_stages deep); for block
    FP8, N and K tiles that divide the 128x128 scale block (one scale per tile)."""
    space = []
    for bm in (64, 128):
        for bn in ((64, 128) if quant.fp8_block else (64, 128, 256)):
            for bk in (64, 128):
                for stages in (3, 4):
                    if (bm * bk + bk * bn) * quant.element_bytes * stages > SMEM_BYTES:
                        continue
                    warps = 8 if bm * bn >= 128 * 128 else 4
                    for group in (1, 16):
                        space.append({"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
                                      "GROUP_SIZE_M": group, "num_warps": warps,
                                      "num_stages": stages})
    return space


def down_search_space(block_m: int) -> list[dict]:
    """Down-projection tiles at the up tile's BLOCK_SIZE_M (bf16): N and K tiles, 3-5 stages
    (pruned by shared memory), warps as in `search_space`, group 1 or 16, TMA loads off or on."""
    space = []
    for bn in (64, 128, 256):
        for bk in (64, 128):
            for stages in (3, 4, 5):
                if (block_m * bk + bk * bn) * 2 * stages > SMEM_BYTES:
                    continue
                warps = 8 if block_m * bn >= 128 * 128 else 4
                for group in (1, 16):
                    for tma in (False, True):
                        space.append({"BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": bn,
                                      "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": group,
                                      "num_warps": warps, "num_stages": stages, "USE_TMA": tma})
    return space


def nearest(table: dict, m: int) -> dict:
    """SGLang's rule: the entry whose batch size is closest to M."""
    return table[min(table, key=lambda x: abs(int(x) - m))]


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
    """SGLang's fused_moe on random data of one shape (GPU only): bf16, or block FP8."""

    def __init__(self, shape: Shape, max_m: int, quant: Quant = Quant()):
        import torch

        from sglang.srt.layers.moe.topk import StandardTopKOutput

        self.torch = torch
        self.shape = shape
        self.quant = quant
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
        self.kw = {}
        if quant.fp8_block:
            # expert by expert: 8 compile workers each quantizing the 235B shape at once ran the
            # GPU out of memory (fp32 temporaries of the whole [E, ...] tensor)
            self.w1, w1_scale = _quantize_by_expert(self.w1)  # [E, 2N, K] fp8, [E, 2N/128, K/128]
            self.w2, w2_scale = _quantize_by_expert(self.w2)  # [E, K, N] fp8, [E, K/128, N/128]
            self.kw = {"use_fp8_w8a8": True, "w1_scale": w1_scale, "w2_scale": w2_scale,
                       "block_shape": FP8_BLOCK}

    def run(self, m: int, config: dict | None):
        from sglang.srt.layers.moe.fused_moe_triton import override_config
        from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
        from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_moe
        from sglang.srt.layers.moe.topk import StandardTopKOutput

        x = self.x[:m].clone()  # fused_moe writes its output in place
        topk = StandardTopKOutput(*(t[:m] for t in self.topk))
        if config is None:  # SGLang's own choice (file lookup, else default)
            return fused_moe(x, self.w1, self.w2, topk, MoeRunnerConfig(inplace=True), **self.kw)
        with override_config(config):
            return fused_moe(x, self.w1, self.w2, topk, MoeRunnerConfig(inplace=True), **self.kw)

    def run_split(self, m: int, up: dict, down: dict | None):
        """fused_moe with SGLang's own lookup answering `up` for the first GEMM and `down` (None:
        no down file) for the second, as a server with those files would run it."""
        with split_lookup(up, down):
            return self.run(m, None)

    def time_ms(self, m: int, config: dict | None) -> float:
        import triton

        return triton.testing.do_bench(lambda: self.run(m, config), warmup=20, rep=80,
                                       return_mode="median")

    def time_split_ms(self, m: int, up: dict, down: dict | None) -> float:
        import triton

        return triton.testing.do_bench(lambda: self.run_split(m, up, down), warmup=20, rep=80,
                                       return_mode="median")


@contextmanager
def split_lookup(up: dict, down: dict | None):
    """SGLang's config-file lookup answers {any M: up} and, for the down file, {any M: down}
    (None: no file). try_get_optimal_moe_config pops USE_TMA from its own copy."""
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe_triton_config as cfgmod

    original = cfgmod.get_moe_configs

    def lookup(E, N, dtype, block_n=0, block_k=0, per_channel_quant=False, down_moe=False):
        if down_moe:
            return None if down is None else {1: dict(down)}
        return {1: dict(up)}

    cfgmod.get_moe_configs = lookup
    try:
        yield
    finally:
        cfgmod.get_moe_configs = original


def _quantize_by_expert(w):
    """[E, N, K] bf16 -> ([E, N, K] fp8, [E, N/128, K/128] float32 scales), one expert at a time."""
    import torch

    from moep_sglang.models.fp8 import quantize_block_fp8

    parts = [quantize_block_fp8(w[e]) for e in range(w.shape[0])]
    q = torch.stack([p[0] for p in parts])
    scale = torch.stack([p[1] for p in parts])
    return q, scale


def sglang_table(shape: Shape, quant: Quant) -> dict | None:
    """SGLang's own config file for the shape and format (without moep's hook), if it ships one."""
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe_triton_config as cfgmod

    block = quant.block or [0, 0]
    return cfgmod.get_moe_configs(shape.experts, shape.inter, quant.dtype, block[0], block[1])


def sglang_default(shape: Shape, quant: Quant, m: int) -> dict:
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe_triton_config as cfgmod

    return cfgmod.get_default_config(m, shape.experts, shape.inter, shape.hidden, shape.top_k,
                                     quant.dtype, False, quant.block)


def sglang_choice(shape: Shape, m: int, quant: Quant = Quant()) -> tuple[dict, str]:
    """The config SGLang itself would run at M (without moep's hook), and where it came from."""
    table = sglang_table(shape, quant)
    if table:
        return table[min(table, key=lambda x: abs(x - m))], "sglang file"
    return sglang_default(shape, quant, m), "sglang default"


def publish_server_args(model_dir: Path) -> None:
    """fused_moe reads SGLang's published runtime config (as SGLang's own tuning script does)."""
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    set_global_server_args_for_scheduler(ServerArgs(model_path=str(model_dir)))


def compile_part(shapes: list[Shape], part: int, parts: int, quant: Quant,
                 down_m: list[int] | None = None) -> None:
    """Run every `parts`-th candidate once at a small M: fills Triton's on-disk cache. With
    `down_m`, the down-projection candidates at the up tile of each of those batch sizes."""
    for shape in shapes:
        bench = Bench(shape, 512, quant)
        if down_m is None:
            jobs = [(cfg, None) for cfg in search_space(quant)]
        else:
            table = up_table(shape, quant)
            ups = {json.dumps(up_tile(table, shape, quant, m), sort_keys=True) for m in down_m}
            jobs = [(json.loads(up), cfg) for up in sorted(ups)
                    for cfg in down_search_space(json.loads(up)["BLOCK_SIZE_M"])]
        for cfg, down in jobs[part::parts]:
            try:
                bench.run(512, cfg) if down is None else bench.run_split(512, cfg, down)
            except Exception as exc:  # an invalid tile is skipped later too
                print(f"compile {cfg} {down}: {type(exc).__name__}", flush=True)
        bench.torch.cuda.synchronize()
        del bench  # this shape's weights, before the next shape's


def tune(shape: Shape, batch_sizes: list[int], quant: Quant = Quant()
         ) -> tuple[dict, list[dict]]:
    import torch

    bench = Bench(shape, max(batch_sizes), quant)
    tuned, rows = {}, []
    for m in batch_sizes:
        base_cfg, source = sglang_choice(shape, m, quant)
        base_ms = bench.time_ms(m, base_cfg)
        best_cfg, best_ms = base_cfg, base_ms
        for cfg in search_space(quant):
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
    return merge_table(tuned, sglang_table(shape, quant),
                       lambda m: sglang_default(shape, quant, m)), rows


def up_table(shape: Shape, quant: Quant) -> dict | None:
    """The up-projection table a server would look up: ours (MOEP_MOE_CONFIG_DIR, then
    shipped), else SGLang's own file; None: SGLang's generic default per M."""
    import triton
    from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config import (
        get_config_file_name,
    )

    from moep_sglang.kernels.moe_configs import find_config

    name = get_config_file_name(shape.experts, shape.inter, quant.dtype, quant.block)
    return find_config(name, triton.__version__) or sglang_table(shape, quant)


def up_tile(table: dict | None, shape: Shape, quant: Quant, m: int) -> dict:
    """The up tile at M from `up_table`'s answer (None: SGLang's generic default)."""
    return dict(nearest(table, m)) if table else sglang_default(shape, quant, m)


def tune_down(shape: Shape, batch_sizes: list[int], quant: Quant = Quant()
              ) -> tuple[dict, list[dict]]:
    """The down file for this shape: at each M of `batch_sizes` the fastest down tile (kept only
    if it beats no down file), at every other batch size of the up table the up tile itself
    (TMA off), i.e. what SGLang runs without a down file."""
    import torch

    if quant.fp8_block:
        raise SystemExit("--down tunes bf16 experts only")
    bench = Bench(shape, max(batch_sizes), quant)
    table = up_table(shape, quant)
    down = {int(m): {**TRITON_DEFAULTS, **cfg} for m, cfg in (table or {}).items()}
    if not table:
        down.update({m: {**TRITON_DEFAULTS, **sglang_default(shape, quant, m)} for m in SMALL_M})
    rows = []
    for m in batch_sizes:
        up = up_tile(table, shape, quant, m)
        base_ms = bench.time_split_ms(m, up, None)
        best_cfg, best_ms = None, base_ms
        for cfg in down_search_space(up["BLOCK_SIZE_M"]):
            try:
                ms = bench.time_split_ms(m, up, cfg)
            except Exception:  # out of resources / not compilable: not a candidate
                continue
            if ms < best_ms:
                best_cfg, best_ms = cfg, ms
        rel = 0.0
        if best_cfg is not None:
            ref = bench.run_split(m, up, None).float()
            out = bench.run_split(m, up, best_cfg).float()
            rel = (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()
            if not rel < 2e-2:
                raise SystemExit(f"{shape} M={m}: down tile's output differs by {rel:.2e}")
        down[m] = {**TRITON_DEFAULTS, **(best_cfg or up)}
        rows.append({"M": m, "up_config": up, "no_down_file_ms": base_ms,
                     "no_down_file_tflops": shape.flops(m) / base_ms / 1e9,
                     "down_config": best_cfg, "tuned_ms": best_ms,
                     "tuned_tflops": shape.flops(m) / best_ms / 1e9,
                     "speedup": base_ms / best_ms, "rel_diff": rel})
        print(f"E={shape.experts} N={shape.inter} K={shape.hidden} M={m:6d}: no down file "
              f"{base_ms:7.3f} ms -> down tile {best_ms:7.3f} ms ({rows[-1]['speedup']:.2f}x, "
              f"{rows[-1]['tuned_tflops']:5.0f} TFLOP/s) {best_cfg}", flush=True)
    return {str(m): down[m] for m in sorted(down)}, rows


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
    p.add_argument("--fp8-block", action="store_true",
                   help="tune block-FP8 experts (fp8_w8a8, 128x128 scales) instead of bf16")
    p.add_argument("--down", action="store_true",
                   help="tune the down projection's own tile and TMA (the `_down.json` file)")
    p.add_argument("--git-sha", default="unknown")
    args = p.parse_args()
    quant = Quant(args.fp8_block)
    if args.model_dir is None:
        from moep_sglang.models.checkpoint import ensure_model

        args.model_dir = ensure_model(Path("/tmp/moep-models"), "qwen3-30b-a3b")
    publish_server_args(args.model_dir)
    if args.compile_part:
        i, n = (int(x) for x in args.compile_part.split("/"))
        down_m = [int(x) for x in args.batch_sizes.split(",")] if args.down else None
        compile_part(args.shape, i, n, quant, down_m)
        return

    import torch
    import triton

    started = time.monotonic()
    if args.compile_workers > 1:
        cmd = [sys.executable, __file__, "--out", str(args.out), "--model-dir",
               str(args.model_dir)] + [f"--shape={s.experts},{s.inter},{s.hidden},{s.top_k}"
                                       for s in args.shape]
        cmd += ["--fp8-block"] if quant.fp8_block else []
        cmd += ["--down", f"--batch-sizes={args.batch_sizes}"] if args.down else []
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
              "triton": triton.__version__, "down": args.down,
              "search_space": len(down_search_space(128) if args.down else search_space(quant)),
              "experts_format": quant.dtype or "bf16", "block_shape": quant.block,
              "compile_s": round(compile_s, 1), "shapes": []}
    for shape in args.shape:
        table, rows = (tune_down if args.down else tune)(shape, batch_sizes, quant)
        name = get_config_file_name(shape.experts, shape.inter, quant.dtype, quant.block,
                                    down_moe=args.down)
        (folder / name).write_text(json.dumps(table, indent=4) + "\n")
        report["shapes"].append({"shape": vars(shape), "file": name, "rows": rows})
    report["total_s"] = round(time.monotonic() - started, 1)
    tag = gpu.replace(" ", "_") + "_" + "_".join(f"E{s.experts}N{s.inter}" for s in args.shape)
    tag += "_fp8" if quant.fp8_block else ""
    tag += "_down" if args.down else ""
    (args.out / f"tune_moe_{tag}.json").write_text(json.dumps(report, indent=2))
    print(f"tuned {len(args.shape)} shapes in {report['total_s']} s (compile {compile_s:.0f} s)")


if __name__ == "__main__":
    main()
