"""The plugin's GPU kernels against SGLang's (run on the GPU machines: pytest -m gpu tests/gpu):
the MoE layer with the gate-up GEMM and SiLU-and-mul merged (moep_sglang/kernels/gate_up_silu.py)
and the grouped-GEMM experts (moep_sglang/kernels/grouped_moe.py) against SGLang's Triton
fused_moe on the same random layer, and the grouped path's Triton combine against its torch form."""

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


def _sglang_fused_moe(x, w13, w2, weights, ids):
    """SGLang's own kernels (the plugin's hook is not loaded in this process), in place on a
    copy, with the configs its server would look up (server args published)."""
    from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_module
    from sglang.srt.layers.moe.topk import StandardTopKOutput

    from bench.gpu.tune_moe import publish_server_args
    from moep_sglang.models.checkpoint import ensure_model

    publish_server_args(ensure_model(Path("/tmp/moep-models"), "qwen3-30b-a3b"))
    return sglang_module.fused_moe(x.clone(), w13, w2, StandardTopKOutput(weights, ids, None),
                                   MoeRunnerConfig(num_experts=E, num_local_experts=E,
                                                   inplace=True))


def _assert_close(name, got, ref):
    diff = (got.float() - ref.float()).abs().max().item()
    print(f"{name} vs SGLang fused_moe: max abs diff {diff:.3g} "
          f"(output scale {ref.float().abs().max().item():.3g})")
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_gpu_grouped_experts_equal_sglang_fused_moe():
    from sglang.srt.layers.moe.moe_runner.triton_utils import fused_moe as sglang_module

    x, w13, w2, weights, ids = _layer(4096)
    ref = _sglang_fused_moe(x, w13, w2, weights, ids)
    got = grouped_moe.grouped_experts(x, w13, w2, weights, ids, act=sglang_module.silu_and_mul)
    _assert_close("grouped experts", got, ref)


# 4,096 tokens: C2 in token order; 16,384: an H100 takes its tuned down tile with TMA there
# (C2 expert-sorted), an H200 has no down file and stays in token order
@pytest.mark.parametrize("tokens", [1500, 4096, 16384])
def test_gpu_gate_up_silu_experts_equal_sglang_fused_moe(tokens):
    from moep_sglang.kernels import gate_up_silu

    x, w13, w2, weights, ids = _layer(tokens, seed=tokens)
    ref = _sglang_fused_moe(x, w13, w2, weights, ids)
    buffer = x.clone()
    got = gate_up_silu.fused_experts(buffer, w13, w2, weights, ids, out=buffer, scale=1.0,
                                     filter_expert=False)
    assert got.data_ptr() == buffer.data_ptr()
    _assert_close(f"gate_up_silu experts, {tokens} tokens", got, ref)
