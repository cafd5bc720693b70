"""The plugin's hook on SGLang's fused_experts (grouped GEMM, gate-up GEMM with SiLU): which path
the switches pick, which calls a path takes, and that every other call reaches SGLang's function
with its arguments unchanged."""

import pytest
import torch
from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
from sglang.srt.layers.moe.topk import StandardTopKOutput

from moep_sglang.plugin import routed_experts

E, INTER, HIDDEN, K = 8, 32, 64, 2


def _call(tokens=4096, dtype=torch.bfloat16, device="meta"):
    x = torch.empty(tokens, HIDDEN, dtype=dtype, device=device)
    w1 = torch.empty(E, 2 * INTER, HIDDEN, dtype=dtype, device=device)
    w2 = torch.empty(E, HIDDEN, INTER, dtype=dtype, device=device)
    ids = torch.empty(tokens, K, dtype=torch.int32, device=device)
    return x, w1, w2, ids


def _config(**over):
    """A runner config with every expert local (as a single-GPU FusedMoE builds it)."""
    return MoeRunnerConfig(**{"num_experts": E, "num_local_experts": E, **over})


def _reason(config=None, quantized=False, biased=False, min_tokens=2048, **call):
    x, w1, w2, ids = _call(**call)
    return routed_experts.skip_reason(x, w1, w2, ids, config or _config(), quantized, biased,
                                      min_tokens)


def test_calls_the_plugin_paths_do_not_compute_like_sglang_keep_sglangs_kernel():
    assert "quantized" in _reason(quantized=True)
    assert "biased" in _reason(biased=True)
    assert "dtype" in _reason(dtype=torch.float32)
    assert "activation gelu" in _reason(_config(activation="gelu"))
    assert "router weight" in _reason(_config(apply_router_weight_on_input=True))
    assert "router weight" in _reason(_config(gemm1_alpha=1.0, gemm1_clamp_limit=7.0))
    assert "expert parallelism" in _reason(_config(num_experts=16, num_local_experts=8))
    # SGLang filters ids when it does not know the expert count either (fused_experts)
    assert "expert parallelism" in _reason(MoeRunnerConfig())
    assert "tokens <" in _reason(tokens=2047)
    assert "tokens <" not in _reason(tokens=2047, min_tokens=1024)
    assert _reason(device="meta") == "not on a GPU"  # every check above passed


def test_one_expert_per_token_keeps_sglangs_kernel():
    x, w1, w2, _ = _call()
    ids = torch.empty(x.shape[0], 1, dtype=torch.int32, device="meta")  # [T, k=1]
    assert "one expert per token" in routed_experts.skip_reason(x, w1, w2, ids, _config(), False,
                                                                False, 1)


@pytest.mark.parametrize("grouped,fused,expected", [
    (None, None, "gate_up_silu"),  # the default: measured faster (h100_gate_up_silu.json)
    ("1", None, "grouped"), (None, "1", "gate_up_silu"), ("1", "1", "grouped"),
    (None, "0", None), ("0", "0", None)])
def test_the_switches_pick_the_path(monkeypatch, grouped, fused, expected):
    for name, value in (("MOEP_GROUPED_MOE", grouped), ("MOEP_FUSED_MOE_ACT", fused)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert routed_experts.path() == expected


def test_padded_down_weights_keep_sglangs_kernel():
    x, w1, _, ids = _call()
    w2 = torch.empty(E, HIDDEN, INTER + 8, dtype=torch.bfloat16, device="meta")  # MoE padding
    reason = routed_experts.skip_reason(x, w1, w2, ids, _config(), False, False, 1)
    assert reason == "shapes the plugin paths do not take"


def test_strided_activations_or_weights_keep_sglangs_kernel():
    x, w1, w2, ids = _call()
    wide = torch.empty(x.shape[0], 2 * HIDDEN, dtype=x.dtype, device="meta")[:, :HIDDEN]
    assert routed_experts.skip_reason(wide, w1, w2, ids, _config(), False, False, 1) == \
        "strided activations"
    w1_t = torch.empty(E, HIDDEN, 2 * INTER, dtype=x.dtype, device="meta").transpose(1, 2)
    assert routed_experts.skip_reason(x, w1_t, w2, ids, _config(), False, False, 1) == \
        "strided expert weights"


@pytest.mark.parametrize("flag,k,expected", [
    (True, 3, "--enable-fused-moe-sum-all-reduce"),  # SGLang adds into the output atomically
    (False, 3, "not on a GPU"),  # every check passed but the device
    (True, 2, "not on a GPU")])  # SGLang ignores the flag for k <= 2
def test_sglangs_fused_sum_all_reduce_keeps_sglangs_kernel(monkeypatch, flag, k, expected):
    monkeypatch.setattr(routed_experts, "_fused_sum_all_reduce", lambda: flag)
    x, w1, w2, _ = _call()
    ids = torch.empty(x.shape[0], k, dtype=torch.int32, device="meta")
    assert routed_experts.skip_reason(x, w1, w2, ids, _config(), False, False, 1) == expected


def test_the_fused_sum_flag_reads_false_without_a_server():
    assert routed_experts._fused_sum_all_reduce() is False


@pytest.mark.parametrize("grouped,fused", [("1", "1"), ("0", "1"), ("0", "0")])
def test_a_skipped_call_reaches_sglang_with_its_arguments(monkeypatch, grouped, fused):
    monkeypatch.setenv("MOEP_GROUPED_MOE", grouped)
    monkeypatch.setenv("MOEP_FUSED_MOE_ACT", fused)
    x, w1, w2, ids = _call(tokens=16, device="cpu")
    topk = StandardTopKOutput(torch.ones(16, K), ids, None)
    config = _config()
    seen = {}

    def original(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return "sglang"

    assert routed_experts.experts_first(original, x, w1, w2, topk, config, use_fp8_w8a8=True,
                                        block_shape=[128, 128], a_new_sglang_flag=3) == "sglang"
    assert seen["args"] == (x, w1, w2, topk, config)
    assert seen["kwargs"] == {"use_fp8_w8a8": True, "block_shape": [128, 128],
                              "a_new_sglang_flag": 3}  # passed through as given


def test_a_taken_grouped_call_writes_in_place_when_sglang_would(monkeypatch):
    monkeypatch.setenv("MOEP_GROUPED_MOE", "1")
    monkeypatch.setattr(routed_experts, "skip_reason", lambda *a, **k: None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, HIDDEN, generator=gen).to(torch.bfloat16)
    w1 = (torch.randn(E, 2 * INTER, HIDDEN, generator=gen) / 8).to(torch.bfloat16)
    w2 = (torch.randn(E, HIDDEN, INTER, generator=gen) / 6).to(torch.bfloat16)
    weights, ids = torch.topk(torch.rand(12, E, generator=gen), K, dim=-1)
    topk = StandardTopKOutput(weights, ids.to(torch.int32), None)
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_fused_moe

    monkeypatch.setattr(sglang_fused_moe, "silu_and_mul",
                        lambda h, out: out.copy_(torch.nn.functional.silu(h[:, :INTER])
                                                 * h[:, INTER:]), raising=False)
    fresh = routed_experts.experts_first(None, x.clone(), w1, w2, topk, _config(inplace=False))
    buffer = x.clone()
    inplace = routed_experts.experts_first(None, buffer, w1, w2, topk, _config(inplace=True))
    assert inplace.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(inplace, fresh)
    assert not torch.equal(fresh, x)


@pytest.mark.parametrize("inplace", [True, False])
def test_a_taken_gate_up_silu_call_gets_sglangs_output_scale_and_no_filter(monkeypatch, inplace):
    monkeypatch.setenv("MOEP_FUSED_MOE_ACT", "1")
    monkeypatch.setattr(routed_experts, "skip_reason", lambda *a, **k: None)
    seen = {}

    def fake_kernel_sequence(*args, **kwargs):  # the kernels need a GPU: record the call
        seen["args"], seen["kwargs"] = args, kwargs
        return "moep"

    monkeypatch.setattr(routed_experts, "gate_up_silu_experts", fake_kernel_sequence)
    x, w1, w2, ids = _call(tokens=16, device="cpu")
    weights = torch.ones(16, K)
    topk = StandardTopKOutput(weights, ids, None)
    config = _config(inplace=inplace, routed_scaling_factor=2.5)
    assert routed_experts.experts_first(None, x, w1, w2, topk, config) == "moep"
    assert seen["args"] == (x, w1, w2, weights, ids)
    assert seen["kwargs"] == {"out": x if inplace else None, "scale": 2.5,
                              "filter_expert": False}
