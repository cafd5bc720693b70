"""The GPU benchmark scripts' pure logic (the runs themselves need GPUs: bench/results/gpu/)."""

from pathlib import Path

import pytest

from bench.gpu.common import plain_sglang, plan_launches
from bench.gpu.tune_moe import (SMEM_BYTES, SMALL_M, Quant, Shape, down_search_space, merge_table,
                                nearest, search_space)

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
    ("ep", {"--tp-size": "4", "--ep-size": "4"}),
    ("ep_dp", {"--tp-size": "4", "--ep-size": "4", "--dp-size": "4"}),
    ("dwdp", {"--tp-size": "4", "--dwdp-size": "4"}),
])
def test_sglang_strategies_are_one_plain_server_over_all_gpus(strategy, expect):
    [(name, argv)] = plan_launches(strategy, MODEL, 4, gpu_offset=2)
    assert name == f"qwen3-30b-a3b-{strategy}4.log"
    assert {k: _flag(argv, k) for k in expect} == expect
    # SGLang as its users run it: plugin off, its own defaults (attention, radix cache, chunks),
    # only the strategy's flags and the all-reduce fusion's switch
    assert plain_sglang(strategy)
    strategy_flags = {"--load-format", "dummy", "--base-gpu-id", "2", "--tp-size", "--ep-size",
                      "--dp-size", "--dwdp-size", "--enable-dp-attention", "4",
                      "--enforce-disable-flashinfer-allreduce-fusion"}
    assert set(argv) <= strategy_flags
    assert ("--enable-dp-attention" in argv) == (strategy == "ep_dp")


def test_sglang_default_is_plain_sglang_with_only_the_workload_flags():
    plan = plan_launches("sglang_default", MODEL, 2, "--context-length=40000", gpu_offset=1)
    assert [a for _, a in plan] == [
        ["--load-format", "dummy", "--base-gpu-id", str(g), "--context-length=40000"]
        for g in (1, 2)]


def test_asyncep_peers_share_one_gpu_with_a_memory_share_each():
    plan = plan_launches("peer", MODEL, 2, "--mem-fraction-static=0.4", store="h:1",
                         share_gpu=True)
    assert [_flag(a, "--base-gpu-id") for _, a in plan] == ["0", "0"]
    assert [_flag(a, "--asyncep-rank") for _, a in plan] == ["0", "1"]
    assert all(" ".join(a).count("--mem-fraction-static") == 1 for _, a in plan)
    [_, (_, other)] = plan_launches("peer", MODEL, 2, store="h:1")
    assert _flag(other, "--base-gpu-id") == "1" and _flag(other, "--mem-fraction-static") == "0.85"


def test_ours_run_without_radix_cache_except_in_the_mix_and_sglangs_keep_theirs():
    for strategy in ("replicas", "peer"):
        [(_, plain), *_] = plan_launches(strategy, MODEL, 2, store="h:1")
        [(_, mix), *_] = plan_launches(strategy, MODEL, 2, store="h:1", radix_cache=True)
        assert "--disable-radix-cache" in plain and "--disable-radix-cache" not in mix
        assert not plain_sglang(strategy)
    for strategy in ("sglang_default", "tp"):
        for radix_cache in (False, True):
            plan = plan_launches(strategy, MODEL, 2, radix_cache=radix_cache)
            assert all("--disable-radix-cache" not in a for _, a in plan)


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


def test_fp8_search_space_tiles_divide_the_scale_block():
    space = search_space(Quant(fp8_block=True))
    assert len(space) > 10
    for c in space:
        assert 128 % c["BLOCK_SIZE_N"] == 0 and 128 % c["BLOCK_SIZE_K"] == 0
        smem = (c["BLOCK_SIZE_M"] + c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_K"] * c["num_stages"]
        assert smem <= SMEM_BYTES
    assert Quant(True).dtype == "fp8_w8a8" and Quant().dtype is None


def test_down_search_space_keeps_the_up_tile_rows_and_tries_tma_both_ways():
    for block_m in (64, 128):
        space = down_search_space(block_m)
        assert len(space) == len({tuple(sorted(c.items())) for c in space}) > 20
        assert {c["BLOCK_SIZE_M"] for c in space} == {block_m}
        assert sum(c["USE_TMA"] for c in space) * 2 == len(space)
        for c in space:
            smem = (block_m + c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_K"] * 2 * c["num_stages"]
            assert smem <= SMEM_BYTES


def test_nearest_is_sglangs_closest_batch_size():
    table = {"1": "a", "4096": "b", "32768": "c"}
    assert [nearest(table, m) for m in (1, 2000, 4096, 20000, 65536)] == ["a", "a", "b", "c", "c"]


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


def test_profile_breakdown_buckets_kernels_and_counts_idle_gaps():
    from bench.gpu.profile_forward import breakdown

    def k(name, ts, dur, cat="kernel"):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}

    events = [k("fused_moe_kernel", 0, 400), k("flash::FlashAttnFwdSm90<...>", 300, 200),
              k("moe_align_block_size_kernel", 500, 50), k("nvjet_tst_128x256", 600, 100),
              k("Memcpy DtoD", 700, 100, "gpu_memcpy"), k("cpu_op", 0, 5000) | {"cat": "cpu_op"},
              k("rmsnorm_kernel", 1000, 100)]
    r = breakdown(events, steps=2)
    ms = r["ms_per_step"]
    assert r["span_ms_per_step"] == 0.55  # 0..1100 us over 2 steps
    assert (ms["moe_gemm"], ms["attention"], ms["moe_routing"]) == (0.2, 0.1, 0.025)
    assert (ms["dense_gemm"], ms["memcpy"], ms["norm_rope_act"]) == (0.05, 0.05, 0.05)
    assert ms["gpu_idle"] == 0.125  # 550..600 and 800..1000 us uncovered; 300..400 overlaps
    with pytest.raises(ValueError, match="no GPU kernels"):
        breakdown([events[5]], steps=1)


def test_profile_names_the_kernels_around_each_idle_gap_and_the_host_calls():
    from bench.gpu.profile_forward import breakdown

    def k(name, ts, dur, cat="kernel"):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}

    events = [k("fused_moe_kernel", 0, 1000), k("sampling", 1000, 10),
              k("rmsnorm", 2010, 10),  # 1000 us idle after sampling: a wait between steps
              k("fused_moe_kernel", 2100, 1000),  # 80 us: launch latency, under the threshold
              k("sampling", 3100, 10), k("rmsnorm", 4110, 10),
              k("cudaStreamSynchronize", 1010, 990, "cuda_runtime"),
              k("cudaLaunchKernel", 2020, 5, "cuda_runtime")]
    r = breakdown(events, steps=2)
    assert r["idle_gaps_ms_per_step"] == 1.0 and r["largest_idle_gaps_ms"] == [1.0, 1.0]
    [pair] = r["idle_by_kernel_pair"]
    assert pair == {"between": "sampling -> rmsnorm", "ms_per_step": 1.0, "count": 2}
    assert list(r["host_calls_ms_per_step"]) == ["cudaStreamSynchronize", "cudaLaunchKernel"]
    assert r["host_calls_ms_per_step"]["cudaStreamSynchronize"] == 0.495


def test_benchmark_variants_add_flags_to_a_strategy_and_typos_fail_early():
    from bench.gpu.prefill_bench import parse_variants, split_entry

    variants = parse_variants(["b64k=--max-prefill-tokens=65536,--chunked-prefill-size=65536"])
    assert split_entry("replicas/b64k", variants) == (
        "replicas", "b64k", ("--max-prefill-tokens=65536", "--chunked-prefill-size=65536"))
    assert split_entry("sglang_default", variants) == ("sglang_default", "", ())
    with pytest.raises(ValueError, match="no --variant b32k"):
        split_entry("replicas/b32k", variants)
    with pytest.raises(ValueError, match="unknown strategy 'replica'"):
        split_entry("replica", variants)
    with pytest.raises(ValueError, match="expected LABEL="):
        parse_variants(["b64k"])
    [(log, _)] = plan_launches("replicas", MODEL, 1, tag="b64k")
    assert log == "qwen3-30b-a3b-replicas.b64k-r0-g0.log"


def test_a_variant_carries_environment_apart_from_its_flags():
    from bench.gpu.prefill_bench import parse_variants, split_entry, split_env

    variants = parse_variants(["sgcfg=ENV:MOEP_TUNED_MOE_CONFIGS=0,--chunked-prefill-size=8192"])
    _, _, extra = split_entry("replicas/sgcfg", variants)
    assert split_env(extra) == (("--chunked-prefill-size=8192",),
                                {"MOEP_TUNED_MOE_CONFIGS": "0"})
    assert split_env(("--a=1",)) == (("--a=1",), {})


def test_a_variant_names_the_router_of_the_mix():
    from bench.gpu.prefill_bench import MixRouter, parse_variants, split_entry, split_router

    variants = parse_variants(["smg=ROUTER:smg", "hash=ROUTER:smg:prefix_hash,--x=1",
                               "lp=ROUTER:moep:longest_prefix", "two=ROUTER:smg,ROUTER:moep",
                               "pp=ROUTER:pp"])
    assert split_router(split_entry("replicas/smg", variants)[2]) == (
        (), MixRouter("smg", "cache_aware"))
    assert split_router(split_entry("sglang_default/hash", variants)[2]) == (
        ("--x=1",), MixRouter("smg", "prefix_hash"))
    assert split_router(split_entry("peer/lp", variants)[2])[1].label == "moep-router longest_prefix"
    assert split_router(("--a=1",)) == (("--a=1",), MixRouter("moep", "true_flops"))
    with pytest.raises(ValueError, match="one ROUTER: per variant"):
        split_router(split_entry("replicas/two", variants)[2])
    with pytest.raises(ValueError, match="choose from moep, smg"):
        split_router(split_entry("replicas/pp", variants)[2])


def test_warm_up_is_one_full_prefill_batch_per_server():
    from bench.gpu.prefill_bench import warmup_count

    assert warmup_count(32768, 4096, 1) == 8  # the timed run's batch shape compiles here
    assert warmup_count(65536, 4096, 2) == 32
    assert warmup_count(32768, 32768, 1) == 2 and warmup_count(None, 4096, 1) == 2


def test_prompts_of_different_lengths_share_no_prefix():
    from bench.gpu.prefill_bench import _prompts

    short, long_ = _prompts(8, 4096, 150000, 2), _prompts(1, 32768, 150000, 2)
    assert all(p[:16] != long_[0][:16] for p in short)  # a radix cache finds nothing to reuse
    assert _prompts(8, 4096, 150000, 2) == short  # seeded: the same prompts every run


def test_gpumon_summary_reads_nvidia_smi_csv(tmp_path):
    from bench.gpu.gpumon import summarise

    log = tmp_path / "gpumon.csv"
    log.write_text(
        "timestamp, index, clocks.current.sm [MHz], clocks.current.memory [MHz], power.draw [W], "
        "power.limit [W], temperature.gpu, utilization.gpu [%], clocks_event_reasons.active\n"
        "2026/12/04 05:10:00.000, 0, 1980, 3201, 650.1, 700.00, 60, 100, 0x0000000000000000\n"
        "2026/12/04 05:10:00.250, 0, 1500, 3201, 699.1, 700.00, 62, 100, 0x0000000000000004\n"
        "2026/12/04 05:10:00.500, 0, 1400, 3201, 698.0, 700.00, 63, 97, 0x0000000000000004\n"
        "2026/12/04 05:10:00.750, 0, 345, 3201, 90.1, 700.00, 40, 0, 0x0000000000000001\n"
        "2026/12/04 05:10:01.000, 0, [N/A], 3201, [N/A], 700.00, 40, [N/A], [N/A]\n")
    text = summarise(str(log))
    assert text.startswith("3 busy samples (utilization >= 50%) of 5")
    assert "median 1500" in text and "max 1980" in text
    assert "sw_power_cap 67%" in text and "gpu_idle" not in text


def test_profile_host_view_measures_the_lead_and_blames_the_innermost_host_frame():
    from bench.gpu.profile_forward import host_view

    def e(name, ts, dur, cat, tid=1, corr=None):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 7, "tid": tid,
                "args": {} if corr is None else {"correlation": corr}}

    events = [
        # kernel 1 queued 900 us ahead; kernel 2 launched at 2,000, ran at once after a 900-us gap
        e("cudaLaunchKernel", 100, 10, "cuda_runtime", corr=1), e("moe", 1000, 100, "kernel", 0, 1),
        e("cudaLaunchKernel", 2000, 10, "cuda_runtime", corr=2), e("norm", 2000, 100, "kernel", 0, 2),
        # the host thread meanwhile: a Python frame holding an aten op, and another thread busy
        e("layer.py(10): forward", 1050, 1000, "python_function"),
        e("aten::nonzero", 1300, 600, "cpu_op"),
        e("other.py(1): spin", 1100, 900, "python_function", tid=2),
        e("scheduler.py(1): loop", 0, 60_000, "python_function")]  # encloses all: left out
    h = host_view(events, steps=1)
    assert (h["lead_us"]["p10"], h["lead_us"]["p90"]) == (0, 900) and h["kernels_launched_under_50us_ahead"] == 0.5
    assert h["gap_ms_per_step"] == 0.9  # 1,100..2,000
    assert h["host_in_gaps_inclusive_ms_per_step"] == {"layer.py(10): forward": 0.9,
                                                       "aten::nonzero": 0.6}
    assert h["host_in_gaps_self_ms_per_step"] == {"aten::nonzero": 0.6,
                                                  "layer.py(10): forward": 0.3}


def test_profile_host_view_counts_nested_names_once_and_copies_as_gpu_work():
    from bench.gpu.profile_forward import host_view

    def e(name, ts, dur, cat, corr=None):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 7, "tid": 1,
                "args": {} if corr is None else {"correlation": corr}}

    events = [
        e("cudaLaunchKernel", 0, 10, "cuda_runtime", corr=1), e("gemm", 0, 100, "kernel", 1),
        # a copy at 100..400 is GPU work: the gap is 400..1,400, not 100..1,400
        e("cudaMemcpyAsync", 90, 5, "cuda_runtime", corr=2), e("Memcpy HtoD", 100, 300,
                                                                 "gpu_memcpy", 2),
        e("cudaLaunchKernel", 1400, 10, "cuda_runtime", corr=3), e("norm", 1400, 50, "kernel", 3),
        e("module.py(1): _call_impl", 500, 600, "python_function"),  # 500..1,100
        e("module.py(1): _call_impl", 600, 400, "python_function"),  # nested, same name
        e("aten::add", 700, 100, "cpu_op")]  # nothing runs 400..500 and 1,100..1,400
    h = host_view(events, steps=1)
    assert h["gap_ms_per_step"] == 1.0
    assert h["host_in_gaps_inclusive_ms_per_step"] == {"module.py(1): _call_impl": 0.6,
                                                       "aten::add": 0.1}
    assert h["host_in_gaps_self_ms_per_step"] == {"module.py(1): _call_impl": 0.5,
                                                  "(no frame)": 0.4, "aten::add": 0.1}


@pytest.mark.parametrize("kernel,bucket", [
    ("fused_moe_kernel", "moe_gemm"),
    ("_gate_up_silu_body", "moe_gemm"),  # the plugin's merged MoE GEMM, not an activation
    ("void act_and_mul_kernel<c10::BFloat16, &silu_kernel>", "norm_rope_act"),
    ("void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>", "norm_rope_act"),
    ("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<", "attention"),
    ("void moe_align_block_size_kernel<int>", "moe_routing"),
    ("nvjet_sm90_tst_192x192_64x4_1x1_h_bz_coopB_TNN", "dense_gemm"),
])
def test_profile_buckets_kernels_by_what_they_compute(kernel, bucket):
    from bench.gpu.profile_forward import categorize

    assert categorize(kernel, "kernel") == bucket
