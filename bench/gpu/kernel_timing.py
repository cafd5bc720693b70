"""What the one-GPU kernel microbenchmarks share (attn_prefill_bench.py, moe_grouped_bench.py,
gate_up_silu_bench.py): CUDA-event timing, their common flags, the result file's header, and the
MoE benchmarks' random layer and batch."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def time_ms(fn, reps: int, warmup: int = 3) -> float:
    """Median GPU milliseconds of `fn()` over `reps` calls, each between two CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--git-sha", default="unknown")
    parser.add_argument("--name", default=name)


def result_doc(args: argparse.Namespace) -> dict:
    """The result file's header (benchmark, git sha, time, GPU, torch, the run's flags as
    "config": repeats, shapes); rows go in "rows"."""
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    return {"benchmark": args.name, "git_sha": args.git_sha,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hardware": {"gpu": torch.cuda.get_device_name(0)}, "torch": torch.__version__,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                       if k not in ("out", "git_sha", "name")},
            "rows": []}


MOE_SHAPES = ("128,768,2048,8", "128,1536,4096,8")  # E,I,H,k: Qwen3-30B-A3B, Qwen3-235B-A22B


def add_moe_args(parser: argparse.ArgumentParser, tokens: tuple[int, ...]) -> None:
    parser.add_argument("--shape", action="append", default=None, help="E,I,H,k (repeatable)")
    parser.add_argument("--tokens", default=",".join(map(str, tokens)))


def moe_layer(spec: str):
    """spec "E,I,H,k" -> (e, i, h, k, w13 [E, 2I, H], w2 [E, H, I], generator): random bf16
    experts on the GPU, scaled to unit-variance outputs."""
    import torch

    e, i, h, k = (int(v) for v in spec.split(","))
    gen = torch.Generator(device="cuda").manual_seed(0)
    bf16 = torch.bfloat16
    w13 = (torch.randn(e, 2 * i, h, generator=gen, device="cuda") / h ** 0.5).to(bf16)
    w2 = (torch.randn(e, h, i, generator=gen, device="cuda") / i ** 0.5).to(bf16)
    return e, i, h, k, w13, w2, gen


def moe_batch(tokens: int, e: int, h: int, k: int, gen):
    """(x [T, H] bf16, weights [T, k] summing to 1, ids [T, k] int32): near-uniform routing."""
    import torch

    x = torch.randn(tokens, h, generator=gen, device="cuda").to(torch.bfloat16)
    logits = torch.randn(tokens, e, generator=gen, device="cuda")  # [T, E]
    weights, ids = torch.topk(torch.softmax(logits, -1), k, dim=-1)  # [T, k]
    return x, (weights / weights.sum(-1, keepdim=True)).contiguous(), ids.to(torch.int32)
