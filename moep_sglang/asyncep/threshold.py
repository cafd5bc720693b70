"""The saturation threshold T = t_gather x F x gamma: FLOPs per layer a forward must carry for
the background gather of a later layer to hide behind it.

Measured at startup (`calibrate`: time the gather of one layer and a dense GEMM), then re-estimated
online from the gather and compute times the engine observes (beyond the paper, which fixes T at
startup): t_gather from every timed gather, F from forwards that carried at least T.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

_EWMA = 0.2  # weight of a new observation in the online estimates


@dataclass
class Threshold:
    t_gather_s: float  # seconds to assemble one layer's missing experts (startup measurement)
    dense_flops_per_s: float  # F: dense matmul rate of this worker (startup measurement)
    gamma: float  # safety factor
    forced_flops: float | None = None  # --min-batch-flops overrides the measured T
    online_t_gather_s: float | None = None  # EWMA of observed gathers
    online_flops_per_s: float | None = None  # EWMA of observed compute rate of saturated forwards

    @property
    def startup_flops(self) -> float:
        return self.t_gather_s * self.dense_flops_per_s * self.gamma

    @property
    def online_flops(self) -> float:
        t = self.online_t_gather_s if self.online_t_gather_s is not None else self.t_gather_s
        f = (self.online_flops_per_s if self.online_flops_per_s is not None
             else self.dense_flops_per_s)
        return t * f * self.gamma

    @property
    def flops(self) -> float:
        """T in FLOPs per layer: forced if given, else the online estimate (startup until then)."""
        return self.forced_flops if self.forced_flops is not None else self.online_flops

    def observe_gather(self, seconds: float) -> None:
        self.online_t_gather_s = _ewma(self.online_t_gather_s, seconds)

    def observe_forward(self, flops_per_layer: float, compute_s_per_layer: float) -> None:
        if compute_s_per_layer > 0 and flops_per_layer >= self.flops:
            self.online_flops_per_s = _ewma(self.online_flops_per_s,
                                            flops_per_layer / compute_s_per_layer)

    def report(self) -> dict:
        return {
            "threshold_flops": self.flops,
            "startup_threshold_flops": self.startup_flops,
            "t_gather_s": self.t_gather_s,
            "dense_flops_per_s": self.dense_flops_per_s,
            "online_t_gather_s": self.online_t_gather_s,
            "online_flops_per_s": self.online_flops_per_s,
            "gamma": self.gamma,
            "forced": self.forced_flops is not None,
        }


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EWMA) * old + _EWMA * new


def measure_dense_rate(device: torch.device, dtype: torch.dtype, hidden: int,
                       iters: int, fp8: bool = False) -> float:
    """FLOP/s of a [M, H] x [H, 4H] matmul on this worker's device (M = 8192 GPU, 1024 CPU) in
    the compute dtype. FP8 experts on a GPU compute on FP8 tensor cores (SGLang's w8a8 kernels,
    activations quantized per token group): the rate of an FP8 matmul (`torch._scaled_mm`,
    bf16 out) there; on CPU they run weight-only FP8 in `dtype`, so `dtype`'s rate."""
    m = 8192 if device.type == "cuda" else 1024
    n = max(4 * hidden, 256)
    a = torch.randn(m, hidden, dtype=dtype, device=device)  # [M, H]
    b = torch.randn(hidden, n, dtype=dtype, device=device)  # [H, 4H]
    run = lambda: torch.matmul(a, b)  # noqa: E731
    if fp8 and device.type == "cuda":
        a8 = a.to(torch.float8_e4m3fn)  # [M, H] row-major
        b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()  # [H, 4H] column-major
        one = torch.ones((), dtype=torch.float32, device=device)
        run = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one,  # noqa: E731
                                       out_dtype=torch.bfloat16)
    run()
    times = [_timed(run, device) for _ in range(iters)]
    return 2.0 * m * hidden * n / sorted(times)[len(times) // 2]


def measure_gather(run_one: Callable[[], None], device: torch.device, iters: int) -> float:
    """Median seconds of `run_one()`, a complete gather of one layer (all ranks run it)."""
    run_one()
    times = [_timed(run_one, device) for _ in range(iters)]
    return sorted(times)[len(times) // 2]


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
