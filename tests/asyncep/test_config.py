"""AsyncEP flags and expert formats: parsing, validation with messages naming the flag or the
format, and what reaches SGLang."""

from __future__ import annotations

import json
import re

import pytest

from moep_sglang.asyncep.config import AsyncEPConfig, AsyncEPConfigError, BatchingConfig
from moep_sglang.asyncep.formats import check_checkpoint, check_expert_method
from moep_sglang.asyncep.layout import ShardLayout
from moep_sglang.asyncep.threshold import Threshold
from moep_sglang.server.launch import build_command, parse_launch_args

GROUP = ["--asyncep-size", "4", "--asyncep-rank", "2", "--asyncep-store", "10.0.0.1:7000"]


def test_flags_become_one_frozen_config_in_the_environment():
    config = parse_launch_args(["--model-path", "m", *GROUP, "--asyncep-backend", "peer",
                                "--asyncep-lookahead", "2", "--min-batch-flops", "1e9"],
                               on_cpu=True)
    cmd, env = build_command(config)
    ae = AsyncEPConfig.from_json(env["MOEP_ASYNCEP"])
    assert (ae.rank, ae.size, ae.backend, ae.lookahead, ae.store_port) == (2, 4, "peer", 2, 7000)
    assert BatchingConfig.from_json(env["MOEP_BATCHING"]).min_batch_flops == 1e9
    assert "--asyncep-size" not in cmd and cmd[cmd.index("--model-path") + 1] == "m"
    with pytest.raises(Exception):
        ae.rank = 3  # frozen


def test_gpu_defaults_large_chunks_and_no_graphs_unless_given():
    cmd, _ = build_command(parse_launch_args(["--model-path", "m", *GROUP], on_cpu=False))
    assert cmd[cmd.index("--chunked-prefill-size") + 1] == "32768"
    assert cmd[cmd.index("--max-prefill-tokens") + 1] == "32768"
    cmd, _ = build_command(parse_launch_args(
        ["--model-path", "m", *GROUP, "--chunked-prefill-size", "4096"], on_cpu=False))
    assert cmd.count("--chunked-prefill-size") == 1 and "4096" in cmd


def test_kv_cache_free_sizes_the_pool_to_one_batch_unless_given():
    cmd, _ = build_command(parse_launch_args(["--model-path", "m", "--kv-cache-free"], True))
    assert "--disable-radix-cache" in cmd
    assert cmd.count("--max-total-tokens") == 1
    assert cmd[cmd.index("--max-total-tokens") + 1] == "32768"
    cmd, _ = build_command(parse_launch_args(
        ["--model-path", "m", "--kv-cache-free", "--max-total-tokens", "9000"], True))
    assert cmd[cmd.index("--max-total-tokens") + 1] == "9000"


@pytest.mark.parametrize(("argv", "message"), [
    (["--asyncep-size", "2"], "needs all of"),
    (["--asyncep-size", "2", "--asyncep-rank", "2", "--asyncep-store", "h:1"], "--asyncep-rank"),
    ([*GROUP, "--asyncep-lookahead", "5"], "--asyncep-lookahead"),
    (["--asyncep-size", "2", "--asyncep-rank", "0", "--asyncep-store", "nohost"],
     "--asyncep-store"),
    ([*GROUP, "--min-batch-flops", "-1"], "--min-batch-flops"),
])
def test_bad_flags_exit_with_a_message_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_launch_args(["--model-path", "m", *argv], on_cpu=True)
    assert message in capsys.readouterr().err


def test_layout_is_contiguous_and_refuses_an_uneven_split():
    layout = ShardLayout(num_experts=128, size=4, rank=1)
    assert layout.local_range == (32, 64) and layout.expert_range(3) == (96, 128)
    with pytest.raises(ValueError, match="divisible"):
        ShardLayout(num_experts=8, size=3, rank=0)
    with pytest.raises(AsyncEPConfigError):
        AsyncEPConfig(rank=0, size=2, store="h:1", backend="nccl")


def test_threshold_formula_forced_value_and_online_estimates():
    t = Threshold(t_gather_s=2e-3, dense_flops_per_s=1e12, gamma=1.2)
    assert t.flops == pytest.approx(2.4e9)
    t.observe_gather(4e-3)
    assert t.flops == pytest.approx(4.8e9)  # first observation replaces the startup figure
    t.observe_forward(flops_per_layer=1e9, compute_s_per_layer=1e-2)  # below T: not a rate
    assert t.online_flops_per_s is None
    t.observe_forward(flops_per_layer=1e10, compute_s_per_layer=2e-2)  # saturated: 5e11 FLOP/s
    assert t.flops == pytest.approx(4e-3 * 5e11 * 1.2)
    forced = Threshold(1.0, 1.0, 1.0, forced_flops=123.0)
    assert forced.flops == 123.0 and json.dumps(forced.report())


def _checkpoint(tmp_path, quantization_config=None):
    config = {"model_type": "qwen3_moe"}
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


BLOCK_FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
             "weight_block_size": [128, 128]}


def test_asyncep_takes_unquantized_and_block_fp8_checkpoints(tmp_path):
    assert check_checkpoint(None, None) == "unquantized"
    assert check_checkpoint(BLOCK_FP8, None) == "fp8-block"
    assert check_checkpoint(BLOCK_FP8, "fp8") == "fp8-block"
    config = parse_launch_args(["--model-path", _checkpoint(tmp_path, BLOCK_FP8), *GROUP],
                               on_cpu=True)
    assert config.asyncep is not None and config.quantization == "fp8"


@pytest.mark.parametrize(("quant", "flag", "message"), [
    ({**BLOCK_FP8, "activation_scheme": "static"}, None, "static activation scales"),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, None, "per-tensor FP8"),
    (None, "fp8", "per-tensor FP8 (--quantization fp8"),
    ({"quant_method": "awq", "bits": 4}, None, "awq (quant_method"),
    (None, "gptq", "gptq (--quantization gptq)"),
    (BLOCK_FP8, "w8a8_int8", "w8a8_int8"),
])
def test_asyncep_refuses_other_formats_before_sglang_starts(tmp_path, quant, flag, message,
                                                            capsys):
    with pytest.raises(AsyncEPConfigError, match=re.escape(message)):
        check_checkpoint(quant, flag)
    argv = ["--model-path", _checkpoint(tmp_path, quant), *GROUP]
    argv += ["--quantization", flag] if flag else []
    with pytest.raises(SystemExit):
        parse_launch_args(argv, on_cpu=True)
    err = capsys.readouterr().err
    assert message in err and "block FP8 with dynamic activations" in err  # what it takes


def test_the_scheduler_side_check_reads_sglangs_moe_method():
    class UnquantizedFusedMoEMethod:
        pass

    class Fp8MoEMethod:
        def __init__(self, **kw):
            self.use_mxfp8, self.is_fp4_expert, self.block_quant = False, False, True
            self.quant_config = type("Q", (), {"activation_scheme": "dynamic"})()
            self.__dict__.update(kw)

    class AWQMoEMethod:
        pass

    assert check_expert_method(UnquantizedFusedMoEMethod()) == "unquantized"
    assert check_expert_method(Fp8MoEMethod()) == "fp8-block"
    for method, message in ((Fp8MoEMethod(block_quant=False), "per-tensor FP8"),
                            (Fp8MoEMethod(use_mxfp8=True), "MXFP8"),
                            (Fp8MoEMethod(is_fp4_expert=True), "FP4"),
                            (AWQMoEMethod(), "AWQMoEMethod")):
        with pytest.raises(AsyncEPConfigError, match=message):
            check_expert_method(method)


def test_fp8_dense_rate_on_cpu_is_the_compute_dtypes():
    import torch

    from moep_sglang.asyncep.threshold import measure_dense_rate

    rate = measure_dense_rate(torch.device("cpu"), torch.bfloat16, 64, 2, fp8=True)
    assert rate > 0
