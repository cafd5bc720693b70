"""The gate-up projection with SiLU-and-mul in its epilogue (moep_sglang/kernels/gate_up_silu.py),
run by Triton's interpreter on CPU against the two passes it replaces, computed in torch: C1 =
W13 x rounded to bf16, then silu(gate) * up. Rows come sorted by expert in blocks, as SGLang's
moe_align_block_size hands them over, with padding rows and an expert filtered out."""

import pytest
import torch

from moep_sglang.kernels import gate_up_silu as gus


def align(topk_ids: torch.Tensor, block_m: int, num_experts: int, filtered=()):
    """SGLang's moe_align_block_size in torch: the flat (token, slot) rows t*k + j grouped by
    expert, each expert's run padded to a multiple of block_m with the sentinel T*k; expert id
    per block (-1 for experts in `filtered`, as SGLang's filter marks another rank's)."""
    flat = topk_ids.reshape(-1).tolist()
    sentinel = len(flat)
    sorted_ids, expert_ids = [], []
    for e in range(num_experts):
        rows = [r for r, x in enumerate(flat) if x == e]
        if not rows:
            continue
        pad = -len(rows) % block_m
        sorted_ids += rows + [sentinel] * pad
        expert_ids += [-1 if e in filtered else e] * ((len(rows) + pad) // block_m)
    post_padded = torch.tensor([len(sorted_ids)], dtype=torch.int32)
    sorted_ids += [sentinel] * (2 * block_m)  # SGLang allocates the worst case: spare blocks
    return (torch.tensor(sorted_ids, dtype=torch.int32),
            torch.tensor(expert_ids + [-1] * 2, dtype=torch.int32), post_padded)


def reference(x, w13, ids, k):
    """[T*k, I] per flat row: silu(bf16(W_g x)) * bf16(W_u x), in float32."""
    inter = w13.shape[1] // 2
    out = torch.empty(ids.numel(), inter)
    for r, e in enumerate(ids.reshape(-1).tolist()):
        h = (w13[e].float() @ x[r // k].float()).to(torch.bfloat16).float()  # [2I] as C1 holds it
        out[r] = torch.nn.functional.silu(h[:inter]) * h[inter:]
    return out


def _case(e, inter, hidden, k, tokens, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)  # [T, H]
    w13 = (torch.randn(e, 2 * inter, hidden, generator=gen) / hidden ** 0.5).to(torch.bfloat16)
    logits = torch.randn(tokens, e, generator=gen)
    ids = torch.topk(logits, k, dim=-1).indices.to(torch.int32)  # [T, k] distinct per token
    return x, w13, ids


TILE = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 1,
        "num_warps": 4, "num_stages": 2}


@pytest.mark.parametrize("e,inter,hidden,k,tokens,block_k", [
    (4, 32, 64, 2, 21, 32),  # I a multiple of BLOCK_N, H of BLOCK_K
    (6, 24, 48, 3, 10, 32),  # I not a multiple of BLOCK_N (wrapped loads, masked stores), ragged K
])
def test_rows_in_token_order_equal_the_two_passes(e, inter, hidden, k, tokens, block_k):
    x, w13, ids = _case(e, inter, hidden, k, tokens, seed=e + tokens)
    tile = {**TILE, "BLOCK_SIZE_K": block_k}
    sorted_ids, expert_ids, post = align(ids, tile["BLOCK_SIZE_M"], e)
    out = torch.full((tokens * k, inter), float("nan"), dtype=torch.bfloat16)
    gus.gate_up_silu(x, w13, out, sorted_ids, expert_ids, post, k, tile)
    ref = reference(x, w13, ids, k)
    assert not out.isnan().any()  # every real row written
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_sorted_rows_filtered_experts_and_padding_are_left_alone():
    e, inter, hidden, k, tokens = 4, 16, 32, 2, 13
    x, w13, ids = _case(e, inter, hidden, k, tokens, seed=7)
    bm = TILE["BLOCK_SIZE_M"]
    sorted_ids, expert_ids, post = align(ids, bm, e, filtered={2})
    rows = sorted_ids.shape[0]
    out = torch.full((rows, inter), float("nan"), dtype=torch.bfloat16)  # C2 expert-sorted
    gus.gate_up_silu(x, w13, out, sorted_ids, expert_ids, post, k, TILE, c_sorted=True)
    ref = reference(x, w13, ids, k)
    flat = ids.reshape(-1)
    for pos, r in enumerate(sorted_ids.tolist()):
        block_expert = int(expert_ids[pos // bm])
        if r < tokens * k and block_expert != -1:  # a real row of a local expert: C2[r]
            torch.testing.assert_close(out[pos].float(), ref[r], atol=2e-2, rtol=2e-2)
        else:  # padding, a filtered expert's rows, spare blocks: never written
            assert out[pos].isnan().all(), (pos, r, block_expert)
    assert (flat == 2).any()  # the filtered expert had rows to skip


def test_tile_keeps_sglangs_aligned_block_m_and_takes_128_columns():
    sglang = {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 16,
              "num_warps": 8, "num_stages": 4}
    assert gus.tile(sglang, inter=768) == {**sglang, "BLOCK_SIZE_N": 128}
    generic = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8}
    assert gus.tile(generic, inter=1536) == {**generic, "BLOCK_SIZE_N": 128, "num_warps": 4,
                                             "num_stages": 3}  # SGLang's launch defaults
    assert gus.tile(generic, inter=48)["BLOCK_SIZE_N"] == 64  # a small layer: its next power
    assert gus.tile(generic, inter=8)["BLOCK_SIZE_N"] == 16  # never below the MMA's 16


def test_tile_drops_stages_that_would_not_fit_in_shared_memory():
    measured = {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 64, "num_stages": 4}
    assert gus.tile(measured, inter=768)["num_stages"] == 4  # 4 x 48 KB: the tile timed on H100
    # SGLang sized 64 x 128 x 128 in 4 stages for one B tile; two need 80 KB a stage
    wide_k = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "num_stages": 4}
    got = gus.tile(wide_k, inter=1856)
    per_stage = (64 * 128 + 2 * 128 * got["BLOCK_SIZE_N"]) * 2
    assert got["num_stages"] == 2 and got["num_stages"] * per_stage <= gus.SMEM_BYTES


def test_padded_rows_add_sglangs_block_padding_only_for_sorted_c2():
    assert gus.padded_rows(100, 8, 128, 64, sorted_c=False) == 800
    assert gus.padded_rows(100, 8, 128, 64, sorted_c=True) == 800 + 129 * 63
    assert gus.padded_rows(3, 2, 128, 16, sorted_c=True) == 6 + 6 * 15  # fewer rows than experts
