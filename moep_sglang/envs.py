"""Every environment variable moep-sglang reads, typed, in one place."""

from __future__ import annotations

import os
from pathlib import Path


def _get(name: str, default: str) -> str:
    return os.environ.get(name, default)


def force_cpu() -> bool:
    """MOEP_FORCE_CPU=1: use CPU defaults even where a GPU is visible."""
    return _get("MOEP_FORCE_CPU", "0") == "1"


def model_cache_dir() -> Path:
    """MOEP_MODEL_DIR: where `make demo` and the tests keep generated checkpoints."""
    return Path(_get("MOEP_MODEL_DIR", str(Path.cwd() / ".cache" / "models")))


def bench_git_sha() -> str | None:
    """MOEP_GIT_SHA: the commit a benchmark's result file records where the copy it runs in has
    no git history (the GPU machines get the working tree only)."""
    return os.environ.get("MOEP_GIT_SHA") or None


def asyncep_config_json() -> str | None:
    """MOEP_ASYNCEP: the AsyncEP group config (JSON, written by `moep-sglang launch_server`)."""
    return os.environ.get("MOEP_ASYNCEP") or None


def batching_config_json() -> str | None:
    """MOEP_BATCHING: the prefill batching config (JSON, written by `moep-sglang launch_server`)."""
    return os.environ.get("MOEP_BATCHING") or None


def moe_config_dir() -> Path | None:
    """MOEP_MOE_CONFIG_DIR: extra folder of tuned fused-MoE configs (triton_<version>/*.json)."""
    value = os.environ.get("MOEP_MOE_CONFIG_DIR")
    return Path(value) if value else None


def tuned_moe_configs() -> bool:
    """MOEP_TUNED_MOE_CONFIGS=0: ignore moep's tuned fused-MoE configs (SGLang's own choice)."""
    return _get("MOEP_TUNED_MOE_CONFIGS", "1") != "0"


def tuned_moe_down_configs() -> bool:
    """MOEP_TUNED_MOE_DOWN=0: ignore only moep's tuned down-projection configs (`..._down.json`:
    the second GEMM's own tile, TMA loads), so both GEMMs run the up-projection's tile as without
    them (for A/B runs)."""
    return _get("MOEP_TUNED_MOE_DOWN", "1") != "0"


def grouped_moe() -> bool:
    """MOEP_GROUPED_MOE=1: run the routed experts of prefill-sized unquantized calls on Hopper with
    torch's grouped GEMM (moep_sglang/kernels/grouped_moe.py) instead of SGLang's Triton kernel.
    Off by default: on one H100 it made Qwen3-30B-A3B prefill 1.3-3.9% slower end to end
    (bench/results/gpu/h100_30b_one_gpu_grpcontig.json against h100_30b_one_gpu_split.json).
    Read at every call."""
    return _get("MOEP_GROUPED_MOE", "0") == "1"


def fused_moe_act() -> bool:
    """MOEP_FUSED_MOE_ACT=0: prefill-sized unquantized MoE calls on Hopper run SGLang's gate-up
    GEMM and SiLU-and-mul passes instead of the plugin's one kernel for both
    (moep_sglang/kernels/gate_up_silu.py; on by default: on one H100 the whole MoE layer ran
    1.01-1.30x faster with identical outputs, bench/results/gpu/h100_gate_up_silu.json). Read at
    every call."""
    return _get("MOEP_FUSED_MOE_ACT", "1") != "0"


def contiguous_prefill_attention() -> bool:
    """MOEP_CONTIGUOUS_PREFILL_ATTN=0: FA3 prefill attention always reads K/V back through the
    paged cache (SGLang's behaviour) instead of over the batch's own K/V when no request of the
    batch has a cached prefix (moep_sglang/plugin/prefill_attention.py). Read at every call."""
    return _get("MOEP_CONTIGUOUS_PREFILL_ATTN", "1") != "0"


def strided_q_prefill_attention() -> bool:
    """MOEP_STRIDED_Q_ATTN=1: where the FA3 prefill hook attends over the batch's own K/V, hand FA3
    the query as the model made it (a strided view of the fused QKV output) instead of SGLang's
    `q.contiguous()` copy of it in every layer (moep_sglang/plugin/prefill_attention.py). On by
    default since one H100 measured it 1.028x at 4K and 1.013x at 32K, bit-identical scores
    (bench/results/gpu/h100_30b_one_gpu_stq.json); MOEP_STRIDED_Q_ATTN=0 copies as SGLang does.
    Read at every call."""
    return _get("MOEP_STRIDED_Q_ATTN", "1") == "1"


def async_label_logprobs() -> bool:
    """MOEP_ASYNC_LABEL_LOGPROBS=0: gather a prefill-only batch's label-token logprobs with SGLang's
    own code, which waits for the batch's forward to finish (moep_sglang/plugin/logprobs.py)."""
    return _get("MOEP_ASYNC_LABEL_LOGPROBS", "1") != "0"


def kv_events_per_node() -> bool:
    """MOEP_KV_EVENTS_PER_NODE=0: publish SGLang's own one-BlockStored-per-page KV events."""
    return _get("MOEP_KV_EVENTS_PER_NODE", "1") != "0"


def prefix_dedup() -> bool:
    """MOEP_PREFIX_DEDUP=0: let prompts of one group that share an uncached prefix into one
    prefill batch (SGLang's behaviour) instead of one computing it for the others."""
    return _get("MOEP_PREFIX_DEDUP", "1") != "0"


def activation_reserve_mb() -> float | None:
    """MOEP_ACTIVATION_RESERVE_MB: GPU memory (MB) SGLang keeps free for a batch's activations
    instead of its own 1.5 MB per chunk token (written by `moep-sglang launch_server` where it
    chose the batch size; moep_sglang/server/memory.py)."""
    value = os.environ.get("MOEP_ACTIVATION_RESERVE_MB")
    return float(value) if value else None
