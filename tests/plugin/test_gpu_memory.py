"""The worker's GPU memory split on SGLang's real ServerArgs: SGLang 0.5.17's own rule leaves an
80 GB H100 too little for Qwen3-30B-A3B's 61 GB of weights with 32K-token batches; with the
launcher's activation reserve the same call gives the KV pool the rest of the card."""

import copy

import pytest

from moep_sglang.plugin.gpu_memory import reserve_for_activations
from moep_sglang.server.memory import SGLANG_FLOOR_MB

H100_MB = 81559  # what the H100's driver reports (bench/results/gpu/h100_*.json logs)
QWEN3_30B_RESERVE_MB = "6528"  # the launcher's value for it at 32K (tests/server/test_launch.py)


@pytest.fixture(scope="module")
def resolved_args(tiny_model):
    from sglang.srt.server_args import ServerArgs

    return ServerArgs(model_path=str(tiny_model), device="cpu")


def _gpu_args(resolved, chunk: int, fraction: float | None = None):
    """A copy of resolved ServerArgs re-opened for SGLang's memory step as on a GPU."""
    args = copy.deepcopy(resolved)
    object.__setattr__(args, "_declarations_materialized", False)  # SGLang's read-only guard
    args.device, args.chunked_prefill_size, args.mem_fraction_static = "cuda", chunk, fraction
    return args


def _split(resolved, chunk, fraction=None):
    from sglang.srt.server_args import ServerArgs

    args = _gpu_args(resolved, chunk, fraction)
    reserve_for_activations(ServerArgs._handle_gpu_memory_settings, args, H100_MB)
    return args.mem_fraction_static


def test_sglangs_own_rule_leaves_no_room_for_30b_weights_on_h100(resolved_args, monkeypatch):
    monkeypatch.delenv("MOEP_ACTIVATION_RESERVE_MB", raising=False)
    fraction = _split(resolved_args, 32768)
    assert fraction < 61 * 1024 / H100_MB  # what the H100 run logged: 0.384
    assert _split(resolved_args, 8192) > 0.8  # SGLang's own 8K chunks fit


def test_launchers_reserve_replaces_sglangs_activation_term(resolved_args, monkeypatch):
    monkeypatch.setenv("MOEP_ACTIVATION_RESERVE_MB", QWEN3_30B_RESERVE_MB)
    fraction = _split(resolved_args, 32768)
    assert fraction == round((H100_MB - SGLANG_FLOOR_MB) / H100_MB, 3)  # 0.874: SGLang's floor
    assert fraction * H100_MB > 61 * 1024 + 8 * 1024  # weights + an 8 GB KV pool
    assert _split(resolved_args, 8192) >= 0.8  # never below SGLang's own value


def test_a_users_fraction_always_wins(resolved_args, monkeypatch):
    monkeypatch.setenv("MOEP_ACTIVATION_RESERVE_MB", QWEN3_30B_RESERVE_MB)
    assert _split(resolved_args, 32768, fraction=0.5) == 0.5
