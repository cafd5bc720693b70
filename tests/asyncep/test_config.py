"""AsyncEP flags: parsing, validation with messages naming the flag, and what reaches SGLang."""

from __future__ import annotations

import json

import pytest

from moep_sglang.asyncep.config import AsyncEPConfig, AsyncEPConfigError, BatchingConfig
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
