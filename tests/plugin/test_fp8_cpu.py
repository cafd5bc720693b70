"""Block-FP8 checkpoints on a CPU without AMX (moep_sglang.plugin.fp8_cpu): a real worker loads
the hub's FP8 layout and scores like transformers running the same weights dequantized (the
FP8 values times their block scales, in float32)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from moep_sglang.models.fp8 import dequantize_block_fp8
from tests.helpers import ensure_model, hf_last_logits, post, start_worker

LABELS = [10, 20, 30, 40]


@pytest.fixture(scope="module")
def fp8_model(model_root):
    return ensure_model(model_root, "tiny-fp8")


@pytest.fixture(scope="module")
def dequantized(fp8_model, tmp_path_factory):
    """The same checkpoint with every FP8 tensor replaced by q * scale_inv in float32."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("tiny-fp8-dequantized")
    for f in fp8_model.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    config = json.loads((out / "config.json").read_text())
    del config["quantization_config"]
    config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config))
    tensors = {}
    with safe_open(str(fp8_model / "model.safetensors"), "pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            if name.endswith("_scale_inv"):
                continue
            if t.dtype == torch.float8_e4m3fn:
                t = dequantize_block_fp8(t, f.get_tensor(name + "_scale_inv"), torch.float32)
            tensors[name] = t.float()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_fp8_worker_scores_like_transformers_on_the_dequantized_weights(fp8_model, dequantized,
                                                                        log_dir):
    query = list(range(5, 45))
    items = [[50 + i, 60 + i, 70 + i] for i in range(3)]
    worker = start_worker(fp8_model, log_dir, cpu_threads=1)
    try:
        status, body = post(f"{worker.config.url}/v1/score", {
            "query": query, "items": items, "label_token_ids": LABELS, "apply_softmax": True})
    finally:
        worker.stop()
    assert status == 200, body
    got = torch.tensor(body["scores"])  # [num_items, num_labels]
    logits = hf_last_logits(dequantized, [query + it for it in items])  # [num_items, vocab]
    want = torch.softmax(logits[:, LABELS], -1)
    diff = (got - want).abs().max().item()
    print(f"FP8 worker (bf16 activations) vs transformers (float32): max abs diff {diff:.3g}")
    assert diff < 2e-2  # bf16 activations against float32
    assert (want.max(-1).values - want.min(-1).values).min() > 0.05  # the labels differ
