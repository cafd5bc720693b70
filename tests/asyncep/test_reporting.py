"""What an AsyncEP worker reports: weight bytes, T, gather metrics; and the router reading T."""

from __future__ import annotations

import json
import urllib.request

import pytest

from moep_sglang.models.presets import get_preset
from tests.asyncep.conftest import scores_of
from tests.helpers import RouterProcess, start_group, stop_all, worker_spec

SIZE = 2


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as resp:
        raw = resp.read()
    return raw.decode() if url.endswith("/metrics") else json.loads(raw)


def _moep(url: str) -> dict:
    states = _get(f"{url}/server_info")["internal_states"]
    return states[0]["moep"]


@pytest.fixture(scope="module")
def group(tiny_model, log_dir):
    ws = start_group(tiny_model, log_dir, SIZE, "collective", "--enable-metrics")
    for w in ws:
        scores_of(w.config.url)  # some forwards and gathers to report
    yield ws
    stop_all(ws)


def _checkpoint_bytes(model_dir, only: str = "") -> tuple[int, int]:
    """(all tensor bytes, routed-expert tensor bytes) of the checkpoint on disk; with `only`,
    expert tensors whose name contains it."""
    from safetensors import safe_open

    total = experts = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                size = t.numel() * t.element_size()
                total += size
                experts += size if ".mlp.experts." in name and only in name else 0
    return total, experts


def test_weight_bytes_drop_by_the_sharded_experts(group, tiny_model):
    total, experts = _checkpoint_bytes(tiny_model)
    assert experts > 0
    for w in group:
        mem = _moep(w.config.url)["memory"]
        assert mem["expert_full_bytes"] == experts
        assert mem["weight_bytes"] == total - experts * (SIZE - 1) // SIZE
        assert mem["saved_bytes"] == experts * (SIZE - 1) // SIZE
        assert mem["unsharded_weight_bytes"] == total


def test_threshold_is_measured_and_reported(group):
    for w in group:
        state = _moep(w.config.url)
        ae = state["asyncep"]
        assert ae["t_gather_s"] > 0 and ae["dense_flops_per_s"] > 0
        assert ae["startup_threshold_flops"] == pytest.approx(
            ae["t_gather_s"] * ae["dense_flops_per_s"] * ae["gamma"])
        assert state["threshold_flops"] == ae["threshold_flops"] > 0
        assert ae["steps"] > 0 and ae["gathers"] >= ae["steps"] * ae["moe_layers"]
        assert ae["bytes_gathered"] > 0 and ae["online_t_gather_s"] > 0


def test_metrics_on_the_worker(group):
    text = _get(f"{group[0].config.url}/metrics")
    for name in ("moep_asyncep_gather_seconds_count", "moep_asyncep_stall_seconds_count",
                 "moep_asyncep_gathered_bytes_total", "moep_forward_flops_per_layer_count",
                 "moep_batch_tokens_count", "moep_threshold_flops", "moep_weight_bytes",
                 "moep_asyncep_shard_bytes", "moep_asyncep_ring_bytes"):
        values = [float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith(name) and not line.startswith("#")]
        assert values and max(values) > 0, name


def test_router_reads_the_reported_threshold(group, tiny_model, log_dir):
    router = RouterProcess(tiny_model, [worker_spec(w) for w in group],
                           log_dir / "router-asyncep.log")
    try:
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, body = router.get("/workers")
            if all(w["threshold_source"] == "worker" for w in body["workers"]):
                break
            time.sleep(0.5)
        layers = get_preset("tiny").num_layers
        for w in body["workers"]:
            reported = _moep(w["url"])["threshold_flops"]
            assert w["threshold_source"] == "worker"
            assert w["threshold_flops"] == pytest.approx(reported * layers, rel=0.5)
    finally:
        router.stop()
