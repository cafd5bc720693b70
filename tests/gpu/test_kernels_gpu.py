"""The plugin's GPU kernels against SGLang's (run on the GPU machines: pytest -m gpu tests/gpu):
the MoE layer with the gate-up GEMM and SiLU-and-mul merged (moep_sglang/kernels/gate_up_silu.py)
and the grouped-GEMM experts (moep_sglang/kernels/grouped_moe.py) against SGLang's Triton
fused_moe on the same random layer, the grouped path's Triton combine against its torch form, and
the label-logprob gather (moep_sglang/plugin/logprobs.py) for host-device synchronisations."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from moep_sglang.kernels import grouped_moe  # noqa: E402

E, INTER, HIDDEN, K = 128, 768, 2048, 8  # Qwen3-30B-A3B's experts


def _layer(tokens: int, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    bf16 = torch.bfloat16
    w13 = (torch.randn(E, 2 * INTER, HIDDEN, generator=gen, device="cuda") / HIDDEN ** 0.5).to(bf16)
    w2 = (torch.randn(E, HIDDEN, INTER, generator=gen, device="cuda") / INTER ** 0.5).to(bf16)
    x = torch.randn(tokens, HIDDEN, generator=gen, device="cuda").to(bf16)  # [T, H]
    logits = torch.randn(tokens, E, generator=gen, device="cuda")  # [T, E]
    weights, ids = torch.topk(torch.softmax(logits, -1), K, dim=-1)  # [T, k]
    return x, w13, w2, weights / weights.sum(-1, keepdim=True), ids.to(torch.int32)


def test_gpu_combine_kernel_equals_its_torch_form():
    tokens = 1000
    gen = torch.Generator(device="cuda").manual_seed(1)
    y = torch.randn(tokens * K, HIDDEN, generator=gen, device="cuda").to(torch.bfloat16)
    inv = torch.randperm(tokens * K, generator=gen, device="cuda")  # [T*k]
    weights = torch.rand(tokens, K, generator=gen, device="cuda")  # [T, k]
    out = torch.empty(tokens, HIDDEN, dtype=torch.bfloat16, device="cuda")
    got = grouped_moe.combine(y, inv, weights, out, scale=1.5)
    ref = (y.index_select(0, inv).view(tokens, K, HIDDEN).float()
           * weights.unsqueeze(-1)).sum(1) * 1.5  # [T, H] float32
    torch.testing.assert_close(got.float(), ref, atol=2e-2, rtol=1e-2)


@pytest.fixture
def fused_moe(monkeypatch):
    """SGLang's fused_moe with moep's plugin loaded (its tuned configs: on an H100 the 30B
    shape's down tile with TMA from 8,192 tokens) as its Triton runner calls it, in place on a
    copy: run(x, w13, w2, weights, ids, path), path None (SGLang's kernels), "gate_up_silu" or
    "grouped" (the hook's paths). The switches it sets are restored afterwards."""
    from bench.gpu.moe_grouped_bench import sglang_fused_moe

    monkeypatch.setenv("MOEP_GROUPED_MOE", "0")
    monkeypatch.setenv("MOEP_FUSED_MOE_ACT", "0")
    return sglang_fused_moe()


def _assert_close(name, got, ref):
    diff = (got.float() - ref.float()).abs().max().item()
    print(f"{name} vs SGLang fused_moe: max abs diff {diff:.3g} "
          f"(output scale {ref.float().abs().max().item():.3g})")
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_gpu_grouped_experts_equal_sglang_fused_moe(fused_moe):
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_module

    x, w13, w2, weights, ids = _layer(4096)
    ref = fused_moe(x, w13, w2, weights, ids, None)
    got = grouped_moe.grouped_experts(x, w13, w2, weights, ids, act=sglang_module.silu_and_mul)
    _assert_close("grouped experts", got, ref)


# 1,500 and 4,096 tokens: C2 in token order; 16,384: an H100 takes the plugin's tuned down tile
# with TMA there (C2 expert-sorted), an H200 has no down file and stays in token order
@pytest.mark.parametrize("tokens", [1500, 4096, 16384])
def test_gpu_gate_up_silu_experts_equal_sglang_fused_moe(fused_moe, monkeypatch, tokens):
    from moep_sglang.kernels import gate_up_silu

    calls = []
    kernel = gate_up_silu.gate_up_silu

    def counted(*args, **kwargs):
        calls.append(kwargs.get("c_sorted"))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(gate_up_silu, "gate_up_silu", counted)
    x, w13, w2, weights, ids = _layer(tokens, seed=tokens)
    ref = fused_moe(x, w13, w2, weights, ids, None)
    got = fused_moe(x, w13, w2, weights, ids, "gate_up_silu")  # through the plugin's hook
    assert len(calls) == 1  # the hook took the merged kernel's path, once
    _assert_close(f"gate_up_silu experts, {tokens} tokens (C2 sorted: {calls[0]})", got, ref)
    # the same products summed in the same order as SGLang's: bit-identical, not just close
    assert torch.equal(got, ref)


def test_gpu_label_logprobs_gather_does_not_synchronize():
    """SGLang's gather waits for the stream (both checks catch it); ours does not, same values.
    Two checks: torch's sync debug mode (the syncs torch instruments), and a long sleep queued on
    the stream ahead of the gather, which must still be running when ours returns (any wait)."""
    from sglang.srt.layers import logprob_processor as lp

    from moep_sglang.plugin.logprobs import label_logprobs_without_sync

    sglang_fn = getattr(lp.get_token_ids_logprobs_batch_optimized, "__wrapped__",
                        lp.get_token_ids_logprobs_batch_optimized)
    logprobs = torch.log_softmax(torch.randn(8, 151_936, device="cuda"), -1)  # [B, V]
    ids = [[9454, 2753], None, [9454, 2753], [], [1, 2, 3], [9454], [0], [151_935]]
    label_logprobs_without_sync(sglang_fn, logprobs, ids)  # first pinned block: allocated here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        vals, got_ids = label_logprobs_without_sync(sglang_fn, logprobs, ids)
        with pytest.raises(RuntimeError, match="synchroniz"):
            sglang_fn(logprobs, ids)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want_vals, want_ids = sglang_fn(logprobs, ids)
    assert got_ids == want_ids
    assert all(torch.equal(v, w) for v, w in zip(vals, want_vals))
    stream = torch.cuda.current_stream()
    for fn, waits in ((sglang_fn, True), (lambda *a: label_logprobs_without_sync(sglang_fn, *a),
                                          False)):
        torch.cuda.synchronize()
        torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU clock cycles queued before the gather
        fn(logprobs, ids)
        assert stream.query() is waits  # SGLang's returned after the sleep; ours while it runs
    torch.cuda.synchronize()
