"""Start SGLang on the GPU machine the way the benchmarks and the GPU tests need it.

Strategies, each on `num_gpus` GPUs from `gpu_offset`:
  sglang_default  plain `python -m sglang.launch_server` per GPU, plugin off, SGLang's own defaults
              (on Hopper: fa3 attention, breakable prefill CUDA graphs, its MoE configs): SGLang
              as its users run it, the baseline of every one-GPU comparison
  replicas    one independent full-model worker per GPU (no communication: the bound)
  peer        AsyncEP group, one worker per GPU, copy-engine gathers (CUDA IPC)
  collective  AsyncEP group, NCCL all-gather
  tp          SGLang tensor parallelism: one server, --tp-size N
  ep          SGLang expert parallelism (attention tensor-parallel): --tp N --ep N
  ep_dp       SGLang expert parallelism with DP attention: --tp N --ep N --enable-dp-attention --dp N
  dwdp        SGLang's distributed weight data parallelism: --tp N --dwdp-size N
SGLang's strategies (sglang_default and the one-server ones) run as plain
`python -m sglang.launch_server` with the plugin off and only the flags the strategy needs (its
radix cache on, its own chunk sizes, CUDA graphs and MoE configs), the way its users run them;
ours (replicas, peer, collective) run `moep-sglang launch_server` with the launcher's defaults.
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

# Every configuration of ours: the launcher's GPU defaults (moep_sglang/server/launch.py: fa3 on
# Hopper, 32K prefill batches, no decode graphs), no radix cache unless the workload shares
# prefixes. The earlier rows' setting: --worker-flag=--attention-backend=triton.
ASYNCEP_MEM = ("--mem-fraction-static", "0.85")  # the ring's buffers live outside SGLang's pool
NO_RADIX = ("--disable-radix-cache",)
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}  # the GPU machines' rule: never NVLink multicast
ASYNCEP = ("peer", "collective")
# FlashInfer's all-reduce fusion (auto-enabled on SM90 once FlashInfer is installed): a TP2 server
# sat silent for over 4 minutes right after setting up its symmetric memory (cause not found; the
# call ran out of time). The baselines in notes/device.md ran without FlashInfer, so without it:
# the one flag beyond the strategy's own that SGLang's multi-GPU strategies get.
NO_AR_FUSION = ["--enforce-disable-flashinfer-allreduce-fusion"]
SINGLE_SERVER = {  # strategy -> SGLang flags for one server over N GPUs
    "tp": lambda n: ["--tp-size", str(n), *NO_AR_FUSION],
    "ep": lambda n: ["--tp-size", str(n), "--ep-size", str(n), *NO_AR_FUSION],
    "ep_dp": lambda n: ["--tp-size", str(n), "--ep-size", str(n), "--enable-dp-attention",
                        "--dp-size", str(n), *NO_AR_FUSION],
    "dwdp": lambda n: ["--tp-size", str(n), "--dwdp-size", str(n), *NO_AR_FUSION],
}
BASELINE = "sglang_default"
STRATEGIES = (BASELINE, "replicas", *ASYNCEP, *SINGLE_SERVER)


def plain_sglang(strategy: str) -> bool:
    """Whether the strategy's servers are SGLang as its users run it (plugin off, no launcher
    defaults): the baseline and SGLang's own multi-GPU strategies."""
    return strategy == BASELINE or strategy in SINGLE_SERVER


def plan_launches(strategy: str, model: Path, num_gpus: int, *flags: str, gpu_offset: int = 0,
                  dummy: bool = True, store: str = "", radix_cache: bool = False,
                  share_gpu: bool = False, tag: str = "") -> list[tuple[str, list[str]]]:
    """(log file name, launcher argv) for each server of one strategy. Ours run without a radix
    cache unless radix_cache (a workload whose prompts share prefixes); SGLang's keep theirs, as
    by default. With share_gpu, every server of a multi-server strategy runs on GPU gpu_offset
    (AsyncEP `peer` on one GPU); a tag (a benchmark variant's label) goes into the log names."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    load = ["--load-format", "dummy"] if dummy else []
    strategy_tag = f"{strategy}.{tag}" if tag else strategy
    if strategy == BASELINE:  # only what the workload needs
        return [(f"{model.name}-{strategy_tag}-g{gpu_offset + rank}.log",
                 [*load, "--base-gpu-id", str(gpu_offset + rank), *flags])
                for rank in range(num_gpus)]
    if strategy in SINGLE_SERVER:  # only what the workload and the strategy need
        return [(f"{model.name}-{strategy_tag}{num_gpus}.log",
                 [*load, "--base-gpu-id", str(gpu_offset), *SINGLE_SERVER[strategy](num_gpus),
                  *flags])]
    base = [*(() if radix_cache else NO_RADIX), *load]
    launches = []
    for rank in range(num_gpus):
        gpu = gpu_offset + (0 if share_gpu else rank)
        args = [*base, "--base-gpu-id", str(gpu), *flags]
        if strategy in ASYNCEP:
            args += ["--asyncep-size", str(num_gpus), "--asyncep-rank", str(rank),
                     "--asyncep-store", store, "--asyncep-backend", strategy]
            if "--mem-fraction-static" not in " ".join(flags):
                args += list(ASYNCEP_MEM)
        launches.append((f"{model.name}-{strategy_tag}-r{rank}-g{gpu}.log", args))
    return launches


def start_strategy(strategy: str, model: Path, log_dir: Path, num_gpus: int, *flags: str,
                   gpu_offset: int = 0, dummy: bool = True, ready_timeout_s: float = 900,
                   env: dict[str, str] | None = None, radix_cache: bool = False,
                   share_gpu: bool = False, tag: str = "",
                   kv_events: bool | None = None) -> list[WorkerProcess]:
    """Start one strategy's servers and wait until every one serves. With radix_cache, each
    server keeps its prefix cache and (kv_events, default: radix_cache) publishes KV events
    (config.kv_events_port) for a router; a server with no router in front publishes none."""
    kv_events = radix_cache if kv_events is None else kv_events
    launches = plan_launches(strategy, model, num_gpus, *flags, gpu_offset=gpu_offset,
                             dummy=dummy, store=f"127.0.0.1:{free_port()}",
                             radix_cache=radix_cache, share_gpu=share_gpu, tag=tag)
    worker_env = {**NVLS_OFF, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **(env or {})}
    workers = [WorkerProcess(WorkerConfig(
        model, free_port(), log_dir / name, extra_args=tuple(args), env=worker_env,
        kv_events_port=free_port_pair() if kv_events else None,
        baseline=plain_sglang(strategy))).start()
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
                  ready_timeout_s: float = 900, share_gpu: bool = False) -> list[WorkerProcess]:
    """One worker per GPU (all on the first with share_gpu); with asyncep_backend, the N workers
    form one AsyncEP group."""
    return start_strategy(asyncep_backend or "replicas", model, log_dir, num_gpus, *flags,
                          dummy=dummy, ready_timeout_s=ready_timeout_s, share_gpu=share_gpu)
