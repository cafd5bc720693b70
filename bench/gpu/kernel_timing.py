"""What the one-GPU kernel microbenchmarks share (attn_prefill_bench.py, moe_grouped_bench.py):
CUDA-event timing, their common flags, and the result file's header."""

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
