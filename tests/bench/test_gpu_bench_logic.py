"""The GPU benchmark scripts' pure logic (the runs themselves need GPUs: bench/results/gpu/)."""

from pathlib import Path

import pytest

from bench.gpu.common import plan_launches
from bench.gpu.tune_moe import SMEM_BYTES, SMALL_M, Shape, merge_table, search_space

MODEL = Path("/models/qwen3-30b-a3b")


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_replicas_and_asyncep_get_one_server_per_gpu_from_the_offset():
    for strategy in ("replicas", "peer", "collective"):
        plan = plan_launches(strategy, MODEL, 2, gpu_offset=2, store="127.0.0.1:5")
        assert [_flag(a, "--base-gpu-id") for _, a in plan] == ["2", "3"]
        ranks = [_flag(a, "--asyncep-rank") for _, a in plan if "--asyncep-rank" in a]
        assert ranks == ([] if strategy == "replicas" else ["0", "1"])
        if strategy != "replicas":
            assert {_flag(a, "--asyncep-backend") for _, a in plan} == {strategy}


@pytest.mark.parametrize("strategy,expect", [
    ("tp", {"--tp-size": "4"}),
    ("ep_dp", {"--tp-size": "4", "--ep-size": "4", "--dp-size": "4"}),
    ("dwdp", {"--tp-size": "4", "--dwdp-size": "4"}),
])
def test_sglang_strategies_are_one_server_over_all_gpus(strategy, expect):
    [(name, argv)] = plan_launches(strategy, MODEL, 4)
    assert name == f"qwen3-30b-a3b-{strategy}4.log"
    assert {k: _flag(argv, k) for k in expect} == expect
    assert "--enforce-disable-flashinfer-allreduce-fusion" in argv
    assert _flag(argv, "--attention-backend") == "triton" and "--asyncep-size" not in argv


def test_radix_cache_only_for_the_mix():
    [(_, plain)] = plan_launches("tp", MODEL, 2)
    [(_, mix)] = plan_launches("tp", MODEL, 2, radix_cache=True)
    assert "--disable-radix-cache" in plain and "--disable-radix-cache" not in mix


def test_attention_backend_flag_and_unknown_strategy():
    [(_, argv)] = plan_launches("tp", MODEL, 2, "--attention-backend=flashinfer")
    assert "triton" not in argv and argv[-1] == "--attention-backend=flashinfer"
    with pytest.raises(ValueError, match="choose from"):
        plan_launches("pp", MODEL, 2)


def test_search_space_fits_shared_memory_and_is_prefill_sized():
    space = search_space()
    assert len(space) == len({tuple(sorted(c.items())) for c in space}) > 20
    for c in space:
        smem = (c["BLOCK_SIZE_M"] + c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_K"] * 2 * c["num_stages"]
        assert smem <= SMEM_BYTES and c["BLOCK_SIZE_M"] >= 64


def test_merge_keeps_sglang_entries_below_the_tuned_range():
    tuned = {4096: {"t": 1}, 8192: {"t": 2}}
    merged = merge_table(tuned, {16: {"s": 1}, 4096: {"s": 2}, 65536: {"s": 3}})
    assert merged == {"16": {"s": 1}, "4096": {"t": 1}, "8192": {"t": 2}}


def test_merge_without_sglang_file_uses_its_default_for_small_batches():
    merged = merge_table({2048: {"t": 1}}, None, lambda m: {"BLOCK_SIZE_M": 16 if m <= 128 else 64})
    assert list(merged) == [str(m) for m in SMALL_M] + ["2048"]
    assert merged["1"] == {"num_warps": 4, "num_stages": 3, "BLOCK_SIZE_M": 16}
    assert merged["1024"]["BLOCK_SIZE_M"] == 64 and merged["2048"] == {"t": 1}


def test_shape_flops():
    assert Shape.parse("128,768,2048,8").flops(1) == 2 * 8 * 3 * 2048 * 768
