"""AsyncEP on GPUs (run on the GPU machines: pytest -m gpu tests/gpu). A real random-weight
checkpoint of Qwen3-30B-A3B's layer shape with 2 layers (generated here; the `small` preset's
head size hits SGLang's fallback rotary embedding, which the GPU path rejects), bf16, with the
launcher's GPU defaults (fa3 attention on Hopper): every rank's scores equal an unsharded
worker's, each rank answering while the other idles (for the collective backend: lockstep with an
idle rank, no deadlock). Two GPUs: one rank per GPU, both backends. One GPU: two `peer` ranks share
it (CUDA IPC within one device); `collective` needs two GPUs (NCCL refuses two ranks on one).
The same for the hub's block-FP8 layout (the 30B shape's `-fp8` preset, 2 layers): SGLang's own
FP8 kernels over the gathered FP8 experts and scales, within 1e-3 of an unsharded FP8 worker."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ONE_GPU = torch.cuda.is_available() and torch.cuda.device_count() < 2
# Two servers on one GPU: a share each (0.4 left the second server no KV cache on an H200: SGLang
# asked for >= 0.417, 2026-12-03), and a bounded KV pool: both start at once, and a rank whose
# peer had just taken its whole share for KV found too little left (asked >= 0.465, 2026-12-03).
SHARED = ("--mem-fraction-static", "0.46", "--max-total-tokens", "65536")

from bench.gpu.common import start_strategy, start_workers, stop_all  # noqa: E402
from tests.asyncep.conftest import max_abs_diff, scores_of  # noqa: E402

FP32 = ()  # SGLang's CUDA rmsnorm has no float32 path: bf16, the serving dtype


def _two_layer(preset_name: str) -> Path:
    """A real random-weight checkpoint of the preset's layer shape, 2 layers (made once)."""
    from dataclasses import replace

    from moep_sglang.models.checkpoint import MakeModelParams, make_model
    from moep_sglang.models.presets import get_preset

    name = preset_name.replace("qwen3-30b-a3b", "qwen3-30b-shape") + "-2l"
    out = Path("/tmp/moep-models") / name
    if not any(out.glob("*.safetensors")):
        preset = replace(get_preset(preset_name), name=name, num_layers=2, with_weights=True)
        make_model(MakeModelParams(preset, out))
    return out


@pytest.fixture(scope="module")
def small() -> Path:
    return _two_layer("qwen3-30b-a3b")


@pytest.fixture(scope="module")
def small_fp8() -> Path:
    return _two_layer("qwen3-30b-a3b-fp8")


@pytest.fixture(scope="module")
def reference_fp8(small_fp8, log_dir):
    [worker] = start_workers(small_fp8, log_dir, 1, dummy=False)
    try:
        return scores_of(worker.config.url)
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def reference(small, log_dir):
    [worker] = start_workers(small, log_dir, 1, *FP32, dummy=False)
    try:
        return scores_of(worker.config.url)
    finally:
        worker.stop()


def _assert_scores_close(url: str, reference, label: str, tolerance: float) -> None:
    """The server at url scores like `reference` within `tolerance` (printed: the largest
    difference, and whether they are bit-identical)."""
    got = scores_of(url)
    diff = max_abs_diff(got, reference)
    print(f"GPU {label}: max abs diff {diff:.3g}, bit-identical {got == reference}")
    assert diff <= tolerance


@pytest.mark.parametrize("backend", ["collective", "peer"])
def test_gpu_group_scores_equal_unsharded(backend, small, log_dir, reference):
    if ONE_GPU and backend == "collective":
        pytest.skip("collective needs 2 GPUs: NCCL refuses two ranks on one device")
    flags = (*FP32, *(SHARED if ONE_GPU else ()))
    group = start_workers(small, log_dir, 2, *flags, asyncep_backend=backend, dummy=False,
                          share_gpu=ONE_GPU)
    try:
        for w in group:  # each rank answers while the other idles (collective: lockstep)
            _assert_scores_close(w.config.url, reference, f"{backend} rank {w.config.port}",
                                 1e-2)  # bf16
    finally:
        stop_all(group)


@pytest.mark.parametrize("backend", ["collective", "peer"])
def test_gpu_fp8_group_scores_equal_unsharded(backend, small_fp8, log_dir, reference_fp8):
    if ONE_GPU and backend == "collective":
        pytest.skip("collective needs 2 GPUs: NCCL refuses two ranks on one device")
    flags = SHARED if ONE_GPU else ()
    group = start_workers(small_fp8, log_dir, 2, *flags, asyncep_backend=backend, dummy=False,
                          share_gpu=ONE_GPU)
    try:
        for w in group:
            _assert_scores_close(w.config.url, reference_fp8,
                                 f"FP8 {backend} rank {w.config.port}", 1e-3)
    finally:
        stop_all(group)


@pytest.mark.parametrize("case", ["paged", "radix", "copied_q"])
def test_gpu_prefill_attention_over_raw_kv_equals_paged(case, small, log_dir, reference):
    """The plugin's FA3 prefill over the batch's own K/V with the query uncopied (both default
    on; `reference` ran with them, no radix cache: every batch took them) against SGLang's paged
    read (MOEP_CONTIGUOUS_PREFILL_ATTN=0): the same scores. With the radix cache on, the items of
    one /v1/score share the query's prefix, so batches with a cached prefix take SGLang's path in
    the same server. copied_q: the raw-K/V call as SGLang makes it, its `q.contiguous()` copy
    included (MOEP_STRIDED_Q_ATTN=0; bit-identical on one H100 while the copy was the default,
    bench/results/gpu/h100_gpu_tests_strided_q_2026-12-07.log)."""
    env = {"paged": {"MOEP_CONTIGUOUS_PREFILL_ATTN": "0"}, "radix": {},
           "copied_q": {"MOEP_STRIDED_Q_ATTN": "0"}}[case]
    radix_cache = case == "radix"
    [worker] = start_strategy("replicas", small, log_dir, 1, *FP32, dummy=False, env=env,
                              radix_cache=radix_cache, kv_events=False, tag=case)
    try:
        _assert_scores_close(worker.config.url, reference,
                             f"prefill attention, radix cache {radix_cache}, {case}",
                             1e-2)  # bf16
    finally:
        stop_all([worker])
