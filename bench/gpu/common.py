"""Start SGLang on the GPU machine the way the benchmarks and the GPU tests need it.

Strategies, each on `num_gpus` GPUs from `gpu_offset`:
  replicas    one independent full-model worker per GPU (no communication: the bound)
  peer        AsyncEP group, one worker per GPU, copy-engine gathers (CUDA IPC)
  collective  AsyncEP group, NCCL all-gather
  tp          SGLang tensor parallelism: one server, --tp-size N
  ep_dp       SGLang expert parallelism with DP attention: --tp N --ep N --enable-dp-attention --dp N
  dwdp        SGLang's distributed weight data parallelism: --tp N --dwdp-size N
"""

from __future__ import annotations

import os
from pathlib import Path

from moep_sglang.server.worker_process import (
    WorkerConfig,
    WorkerProcess,
    free_port,
    free_port_pair,
    stop_all,
)

# Every configuration: random bf16 weights, no CUDA graphs (prefill-only; graphs cost minutes of
# startup), no radix cache unless the workload shares prefixes. Attention backend:
# --attention-backend, default SGLang's Triton backend (the baselines' setting in notes/device.md).
GPU_ARGS = ("--dtype", "bfloat16",
            "--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled",
            "--mem-fraction-static", "0.85")
NO_RADIX = ("--disable-radix-cache",)
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}  # the GPU machines' rule: never NVLink multicast
ASYNCEP = ("peer", "collective")
# FlashInfer's all-reduce fusion (auto-enabled on SM90 once FlashInfer is installed): a TP2 server
# sat silent for over 4 minutes right after setting up its symmetric memory (cause not found; the
# call ran out of time). The baselines in notes/device.md ran without FlashInfer, so without it.
NO_AR_FUSION = ["--enforce-disable-flashinfer-allreduce-fusion"]
SINGLE_SERVER = {  # strategy -> SGLang flags for one server over N GPUs
    "tp": lambda n: ["--tp-size", str(n), *NO_AR_FUSION],
    "ep_dp": lambda n: ["--tp-size", str(n), "--ep-size", str(n), "--enable-dp-attention",
                        "--dp-size", str(n), *NO_AR_FUSION],
    "dwdp": lambda n: ["--tp-size", str(n), "--dwdp-size", str(n), *NO_AR_FUSION],
}
STRATEGIES = ("replicas", *ASYNCEP, *SINGLE_SERVER)


def plan_launches(strategy: str, model: Path, num_gpus: int, *flags: str, gpu_offset: int = 0,
                  dummy: bool = True, store: str = "",
                  radix_cache: bool = False) -> list[tuple[str, list[str]]]:
    """(log file name, launcher argv) for each server of one strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    base = [*GPU_ARGS, *(() if radix_cache else NO_RADIX),
            *(["--load-format", "dummy"] if dummy else [])]
    if "--attention-backend" not in " ".join(flags):
        base += ["--attention-backend", "triton"]
    if strategy in SINGLE_SERVER:
        return [(f"{model.name}-{strategy}{num_gpus}.log",
                 [*base, "--base-gpu-id", str(gpu_offset), *SINGLE_SERVER[strategy](num_gpus),
                  *flags])]
    launches = []
    for rank in range(num_gpus):
        args = [*base, "--base-gpu-id", str(gpu_offset + rank), *flags]
        if strategy in ASYNCEP:
            args += ["--asyncep-size", str(num_gpus), "--asyncep-rank", str(rank),
                     "--asyncep-store", store, "--asyncep-backend", strategy]
        launches.append((f"{model.name}-{strategy}-g{gpu_offset + rank}.log", args))
    return launches


def start_strategy(strategy: str, model: Path, log_dir: Path, num_gpus: int, *flags: str,
                   gpu_offset: int = 0, dummy: bool = True, ready_timeout_s: float = 900,
                   env: dict[str, str] | None = None,
                   radix_cache: bool = False) -> list[WorkerProcess]:
    """Start one strategy's servers and wait until every one serves. With radix_cache, each
    server keeps its prefix cache and publishes KV events (config.kv_events_port) for a router."""
    launches = plan_launches(strategy, model, num_gpus, *flags, gpu_offset=gpu_offset,
                             dummy=dummy, store=f"127.0.0.1:{free_port()}",
                             radix_cache=radix_cache)
    worker_env = {**NVLS_OFF, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **(env or {})}
    workers = [WorkerProcess(WorkerConfig(
        model, free_port(), log_dir / name, extra_args=tuple(args), env=worker_env,
        kv_events_port=free_port_pair() if radix_cache else None)).start()
        for name, args in launches]
    try:
        for w in workers:
            w.wait_ready(ready_timeout_s)
    except Exception:
        stop_all(workers)
        raise
    return workers


def start_workers(model: Path, log_dir: Path, num_gpus: int, *flags: str,
                  asyncep_backend: str | None = None, dummy: bool = True,
                  ready_timeout_s: float = 900) -> list[WorkerProcess]:
    """One worker per GPU; with asyncep_backend, the N workers form one AsyncEP group."""
    return start_strategy(asyncep_backend or "replicas", model, log_dir, num_gpus, *flags,
                          dummy=dummy, ready_timeout_s=ready_timeout_s)
