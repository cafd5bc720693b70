"""AsyncEP over a block-FP8 checkpoint (the hub's Qwen3-*-FP8 layout, `tiny-fp8`), real CPU
workers: the FP8 experts and their float32 scales are sharded by expert and gathered together,
so every rank's scores equal an unsharded FP8 worker's, and each worker holds the checkpoint's
bytes minus (N-1)/N of its expert bytes, scales included. (On this CPU, without AMX, SGLang's FP8
layers run through the plugin's weight-only FP8 path, moep_sglang.plugin.fp8_cpu; the GPU tests
run SGLang's own FP8 kernels.)"""

from __future__ import annotations

import pytest

from tests.asyncep.conftest import max_abs_diff, scores_of
from tests.asyncep.test_reporting import _checkpoint_bytes, _moep
from tests.helpers import ensure_model, start_group, stop_all

PRESET = "tiny-fp8"


@pytest.fixture(scope="module")
def fp8_model(model_root):
    return ensure_model(model_root, PRESET)


@pytest.fixture(scope="module")
def peer_group(fp8_model, log_dir):
    ws = start_group(fp8_model, log_dir, 2, "peer")
    yield ws
    stop_all(ws)


def test_checkpoint_is_the_hubs_fp8_layout(fp8_model):
    import torch
    from safetensors import safe_open

    with safe_open(str(fp8_model / "model.safetensors"), "pt") as f:
        w = f.get_tensor("model.layers.0.mlp.experts.3.gate_proj.weight")
        s = f.get_tensor("model.layers.0.mlp.experts.3.gate_proj.weight_scale_inv")
        gate = f.get_tensor("model.layers.0.mlp.gate.weight")
    assert w.dtype == torch.float8_e4m3fn and w.shape == (128, 128)
    assert s.dtype == torch.float32 and s.shape == (1, 1)
    assert gate.dtype == torch.bfloat16  # the router gate stays in the model dtype


def test_fp8_group_scores_equal_unsharded(peer_group, reference_scores):
    want = reference_scores(PRESET)
    for worker in peer_group:
        got = scores_of(worker.config.url)
        print(f"{PRESET} N=2 peer: max abs diff {max_abs_diff(got, want):.3g}, "
              f"bit-identical: {got == want}")
        assert max_abs_diff(got, want) <= 1e-3


def test_fp8_collective_group_with_hybrid_offload(fp8_model, log_dir, reference_scores):
    """Collective backend, shards staged through the offload buffers (FP8 and scale tensors)."""
    want = reference_scores(PRESET)
    group = start_group(fp8_model, log_dir, 2, "collective", "--asyncep-offload")
    try:
        for worker in group:
            got = scores_of(worker.config.url)
            print(f"{PRESET} N=2 collective offload: max abs diff {max_abs_diff(got, want):.3g}")
            assert max_abs_diff(got, want) <= 1e-3
    finally:
        stop_all(group)


def test_fp8_weight_bytes_and_gathered_bytes_count_the_scales(peer_group, fp8_model):
    total, experts = _checkpoint_bytes(fp8_model)
    scales = _checkpoint_bytes(fp8_model, only="_scale_inv")[1]
    assert 0 < scales < experts
    for w in peer_group:
        moep = _moep(w.config.url)
        mem, report = moep["memory"], moep["asyncep"]
        assert mem["expert_full_bytes"] == experts
        assert mem["weight_bytes"] == total - experts // 2
        per_layer = experts // 2 // report["moe_layers"]  # one peer's half of one layer
        assert report["bytes_received_per_layer"] == per_layer
