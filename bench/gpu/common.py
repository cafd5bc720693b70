"""Start SGLang workers on the GPU machine the way the benchmark and the GPU tests need them."""

from __future__ import annotations

import os
from pathlib import Path

from moep_sglang.server.worker_process import WorkerConfig, WorkerProcess, free_port, stop_all

# Every configuration: random bf16 weights, SGLang's Triton attention and MoE kernels (the
# baselines' settings), no CUDA graphs (prefill-only; graphs cost minutes of startup).
GPU_ARGS = ("--dtype", "bfloat16", "--attention-backend", "triton",
            "--cuda-graph-backend-decode", "disabled", "--cuda-graph-backend-prefill", "disabled",
            "--mem-fraction-static", "0.85", "--disable-radix-cache")
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}  # the GPU machines' rule: never NVLink multicast


def start_workers(model: Path, log_dir: Path, num_gpus: int, *flags: str,
                  asyncep_backend: str | None = None, dummy: bool = True,
                  ready_timeout_s: float = 900) -> list[WorkerProcess]:
    """One worker per GPU; with asyncep_backend, the N workers form one AsyncEP group."""
    store = f"127.0.0.1:{free_port()}"
    workers = []
    for gpu in range(num_gpus):
        args = [*GPU_ARGS, "--base-gpu-id", str(gpu), *flags]
        if dummy:
            args += ["--load-format", "dummy"]
        if asyncep_backend:
            args += ["--asyncep-size", str(num_gpus), "--asyncep-rank", str(gpu),
                     "--asyncep-store", store, "--asyncep-backend", asyncep_backend]
        name = f"{model.name}-{asyncep_backend or 'replica'}-g{gpu}.log"
        config = WorkerConfig(model, free_port(), log_dir / name, extra_args=tuple(args),
                              env={**NVLS_OFF, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        workers.append(WorkerProcess(config).start())
    try:
        for w in workers:
            w.wait_ready(ready_timeout_s)
    except Exception:
        stop_all(workers)
        raise
    return workers
