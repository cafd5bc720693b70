"""The grouped-GEMM path of the routed experts (moep_sglang/kernels/grouped_moe.py) against the
MoE computed token by token in float32, on CPU (torch's grouped GEMM has a CPU implementation;
the combine runs its torch form there), and the route it sorts by."""

import pytest
import torch

from moep_sglang.kernels import grouped_moe


def _layer(e: int, inter: int, hidden: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    w13 = (torch.randn(e, 2 * inter, hidden, generator=gen) / hidden ** 0.5).to(torch.bfloat16)
    w2 = (torch.randn(e, hidden, inter, generator=gen) / inter ** 0.5).to(torch.bfloat16)
    return w13, w2, gen


def _routing(tokens: int, e: int, k: int, gen):
    logits = torch.randn(tokens, e, generator=gen)  # [T, E]
    weights, ids = torch.topk(torch.softmax(logits, -1), k, dim=-1)  # [T, k]
    return weights / weights.sum(-1, keepdim=True), ids.to(torch.int32), logits


def test_route_sorts_rows_by_expert_and_inverts():
    ids = torch.tensor([[3, 0], [0, 2], [3, 1], [2, 0]], dtype=torch.int32)  # [T=4, k=2]
    order, offs, inv = grouped_moe.route(ids, num_experts=5)
    flat = ids.reshape(-1).long()
    assert flat[order].tolist() == sorted(flat.tolist())  # expert-contiguous
    assert offs.tolist() == [3, 4, 6, 8, 8]  # ends: 3 rows of expert 0, none of expert 4
    assert offs.dtype == torch.int32
    assert torch.equal(order[inv], torch.arange(8))  # inv undoes the sort
    # stable: rows of one expert keep token order
    assert order[:3].tolist() == [1, 2, 7]


def _reference(x, w13, w2, weights, ids):
    """sum_j w[t, j] * W2_e (silu(G_e x_t) * U_e x_t), e = ids[t, j], all in float32."""
    inter = w2.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float32)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            h = w13[e].float() @ x[t].float()  # [2I]
            g = torch.nn.functional.silu(h[:inter]) * h[inter:]  # [I]
            out[t] += float(weights[t, j]) * (w2[e].float() @ g)
    return out


@pytest.mark.parametrize("e,inter,hidden,k,tokens", [(8, 32, 64, 2, 50), (16, 48, 64, 4, 33),
                                                     (4, 16, 32, 1, 7)])
def test_grouped_experts_match_the_token_by_token_moe(e, inter, hidden, k, tokens):
    w13, w2, gen = _layer(e, inter, hidden, seed=e + tokens)
    x = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)  # [T, H]
    weights, ids, _ = _routing(tokens, e, k, gen)
    ref = _reference(x, w13, w2, weights, ids)  # [T, H] float32
    ours = grouped_moe.grouped_experts(x, w13, w2, weights, ids)
    assert ours.shape == ref.shape and ours.dtype == torch.bfloat16
    # bf16 GEMM outputs and activations are rounded on the way: a few bf16 ulps of the scale
    torch.testing.assert_close(ours.float(), ref, atol=2e-2 * ref.abs().max().item(), rtol=2e-2)


def test_grouped_experts_in_place_and_scaled():
    e, inter, hidden, k, tokens = 8, 32, 64, 2, 20
    w13, w2, gen = _layer(e, inter, hidden, seed=1)
    x = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)
    weights, ids, _ = _routing(tokens, e, k, gen)
    expected = grouped_moe.grouped_experts(x, w13, w2, weights, ids, scale=2.5)
    buffer = x.clone()
    got = grouped_moe.grouped_experts(buffer, w13, w2, weights, ids, out=buffer, scale=2.5)
    assert got.data_ptr() == buffer.data_ptr()  # SGLang's in-place contract: x is the output
    torch.testing.assert_close(got, expected)
    half = grouped_moe.grouped_experts(x, w13, w2, weights, ids, scale=1.0)
    torch.testing.assert_close(expected.float(), 2.5 * half.float(), atol=2e-2, rtol=2e-2)


def test_an_expert_with_no_rows_and_one_with_all():
    e, inter, hidden, tokens = 4, 16, 32, 9
    w13, w2, gen = _layer(e, inter, hidden, seed=2)
    x = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)
    ids = torch.full((tokens, 1), 2, dtype=torch.int32)  # every token to expert 2
    weights = torch.ones(tokens, 1)
    got = grouped_moe.grouped_experts(x, w13, w2, weights, ids)
    h = x.float() @ w13[2].float().T  # [T, 2I]
    ref = (torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]) @ w2[2].float().T
    torch.testing.assert_close(got.float(), ref, atol=3e-2, rtol=3e-2)
