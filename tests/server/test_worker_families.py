"""Score equality with transformers for more architectures, one real worker per preset.

These workers start with a plain `python -m sglang.launch_server`: the moep plugin must load
through the `sglang.srt.plugins` entry point alone (its cache report proves it is active).
"""

import pytest
import torch
from transformers import AutoTokenizer

from tests.helpers import ensure_model, hf_last_logits, post, start_worker


@pytest.fixture(scope="module", params=["small", "qwen2-moe-tiny"])
def served(request, model_root, log_dir):
    model = ensure_model(model_root, request.param)
    w = start_worker(model, log_dir, plain_sglang=True, cpu_threads=1)
    yield model, w
    w.stop()


def test_score_equals_transformers(served):
    model, worker = served
    tok = AutoTokenizer.from_pretrained(model)
    labels = [tok.encode(w, add_special_tokens=False)[0] for w in (" A", " B", " C", " D")]
    query = tok.encode("The scientist argued that the complex theory was honest. " * 3)
    items = [tok.encode(f" Choose the correct option (A, B, C or D). {c}") for c in "xyz"]
    got = {}
    for softmax in (False, True):
        status, body = post(f"{worker.config.url}/v1/score", {
            "query": query, "items": items, "label_token_ids": labels, "apply_softmax": softmax})
        assert status == 200, body
        got[softmax] = torch.tensor(body["scores"])  # [num_items, num_labels]
        assert torch.isfinite(got[softmax]).all()
    logits = hf_last_logits(model, [query + it for it in items])  # [num_items, vocab]
    ref_raw = torch.softmax(logits, -1)[:, labels]
    ref_soft = torch.softmax(logits[:, labels], -1)
    assert (got[True] - ref_soft).abs().max() < 1e-2
    assert ((got[False] - ref_raw).abs() / ref_raw).max() < 5e-2
    assert body["usage"]["cached_tokens"] >= len(query)  # plugin active: cache reported
