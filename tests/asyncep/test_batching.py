"""The prefill batching policy with a forced T: batches reach T (real CPU worker)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

from moep_router.cost import CostModel
from moep_router.model_spec import ModelSpec
from tests.asyncep.conftest import LABELS
from tests.helpers import post, start_worker

PROMPT_LEN = 40
NUM_REQUESTS = 4
GAP_S = 0.4  # between arrivals: without holding, each request would be its own batch


def _moep(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/server_info", timeout=30) as resp:
        return json.loads(resp.read())["internal_states"][0]["moep"]


def test_batches_reach_a_forced_threshold(tiny_model, log_dir):
    cost = CostModel.from_spec(ModelSpec.from_model_dir(tiny_model))
    per_request = cost.flops_per_layer(PROMPT_LEN + 1)  # query + one item token
    threshold = 2.5 * per_request  # needs 3 requests
    worker = start_worker(tiny_model, log_dir, cpu_threads=1, extra_args=(
        "--min-batch-flops", str(threshold), "--max-batch-wait-ms", "4000",
        "--disable-radix-cache"))
    try:
        # SGLang's own warmup request decodes for a few steps after startup; a batch formed
        # while something runs is not held (the device is busy anyway), so start after it.
        deadline = time.monotonic() + 60
        while "fired up" not in worker.config.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "SGLang's warmup did not finish"
            time.sleep(0.2)
        time.sleep(0.5)
        before = _moep(worker.config.url)["batching"]["batches"]
        results: list[int] = []

        def send(i: int) -> None:
            query = [100 + i] * PROMPT_LEN
            status, _ = post(f"{worker.config.url}/v1/score",
                             {"query": query, "items": [[7]], "label_token_ids": LABELS})
            results.append(status)

        threads = []
        for i in range(NUM_REQUESTS):
            threads.append(threading.Thread(target=send, args=(i,)))
            threads[-1].start()
            time.sleep(GAP_S)
        for t in threads:
            t.join(60)
        assert results == [200] * NUM_REQUESTS
        state = _moep(worker.config.url)["batching"]
        batches = state["recent_batches"][-(state["batches"] - before):]
        assert state["threshold_flops"] == threshold
        assert state["held_steps"] > 0
        first = batches[0]
        assert first["requests"] >= 3 and first["flops_per_layer"] >= threshold, batches
        # the last request alone is below T: released by the wait bound, not lost
        assert sum(b["requests"] for b in batches) == NUM_REQUESTS, batches
    finally:
        worker.stop()
