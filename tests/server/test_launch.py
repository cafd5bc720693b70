import json

import pytest

from moep_sglang.server.launch import (
    CPU_DEFAULTS,
    GPU_DEFAULTS,
    HOPPER_REUSE_DEFAULTS,
    NO_REUSE_DEFAULTS,
    REUSE_DEFAULTS,
    build_command,
    parse_launch_args,
)


def _cmd(argv, on_cpu=True, gpu_major=None):
    return build_command(parse_launch_args(argv, on_cpu=on_cpu, gpu_major=gpu_major))


def test_cpu_defaults_added_and_env_set():
    cmd, env = _cmd(["--model-path", "m"])
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    for flag, value in CPU_DEFAULTS:
        assert cmd[cmd.index(flag) + 1] == value
    assert env["SGLANG_USE_CPU_ENGINE"] == "1"


def test_health_runs_no_generation_unless_the_environment_says_so(monkeypatch):
    monkeypatch.delenv("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", raising=False)
    for on_cpu in (True, False):
        assert _cmd(["--model-path", "m"], on_cpu=on_cpu)[1][
            "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"] == "0"
    monkeypatch.setenv("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", "1")
    assert _cmd(["--model-path", "m"])[1]["SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"] == "1"


def test_user_flags_win_over_cpu_defaults():
    cmd, _ = _cmd(["--model-path", "m", "--max-total-tokens", "999", "--dtype=bfloat16"])
    assert cmd.count("--max-total-tokens") == 1 and "999" in cmd
    assert "--dtype" not in cmd and "--dtype=bfloat16" in cmd


def test_gpu_gets_no_cpu_defaults():
    cmd, env = _cmd(["--model-path", "m", "--tp", "4"], on_cpu=False)
    assert cmd[3:7] == ["--model-path", "m", "--tp", "4"]
    gpu_flags = {flag for flag, _ in GPU_DEFAULTS + REUSE_DEFAULTS + NO_REUSE_DEFAULTS
                 + HOPPER_REUSE_DEFAULTS}
    assert not {flag for flag, _ in CPU_DEFAULTS} - gpu_flags & set(cmd)
    assert "SGLANG_USE_CPU_ENGINE" not in env or env["SGLANG_USE_CPU_ENGINE"] != "1"


def _value(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def test_gpu_prefill_defaults_follow_prefix_reuse_and_fa3_only_on_hopper():
    # Radix cache on (SGLang's default: prompts may share prefixes), Hopper: 32K batches (the
    # in-batch prefix deduplication keeps their cache hits), prefill graphs for batches to 8K.
    cmd, _ = _cmd(["--model-path", "m"], on_cpu=False, gpu_major=9)
    assert _value(cmd, "--chunked-prefill-size") == "32768"
    assert _value(cmd, "--max-prefill-tokens") == "32768"
    assert _value(cmd, "--cuda-graph-backend-prefill") == "breakable"
    assert _value(cmd, "--cuda-graph-max-bs-prefill") == "8192"
    assert cmd.count("--chunked-prefill-size") == 1
    assert _value(cmd, "--cuda-graph-backend-decode") == "disabled"
    assert _value(cmd, "--attention-backend") == "fa3"
    # Nothing reused (radix cache off, or KV-cache-free): 32K batches, no prefill graphs.
    for flags in (["--disable-radix-cache"], ["--kv-cache-free"]):
        cmd, _ = _cmd(["--model-path", "m", *flags], on_cpu=False, gpu_major=9)
        assert _value(cmd, "--chunked-prefill-size") == "32768"
        assert _value(cmd, "--max-prefill-tokens") == "32768"
        assert _value(cmd, "--cuda-graph-backend-prefill") == "disabled"
    ampere, _ = _cmd(["--model-path", "m"], on_cpu=False, gpu_major=8)
    assert "--attention-backend" not in ampere  # SGLang's own choice elsewhere
    assert "--cuda-graph-backend-prefill" not in ampere
    assert _value(ampere, "--chunked-prefill-size") == "8192"
    assert _value(ampere, "--max-prefill-tokens") == "16384"


def _checkpoint(tmp_path, preset="qwen3-30b-a3b"):
    from moep_sglang.models.checkpoint import hf_config
    from moep_sglang.models.presets import get_preset

    (tmp_path / "config.json").write_text(json.dumps(hf_config(get_preset(preset), 0)))
    return str(tmp_path)


def test_gpu_worker_keeps_its_batches_activations_free_not_sglangs_rule(tmp_path):
    """Where the launcher chose the batch size, the worker tells the plugin how much to keep
    free: 2 x 102 KiB per token of Qwen3-30B-A3B x 32,768 tokens = 6,528 MB."""
    model = _checkpoint(tmp_path)
    for flags in ([], ["--disable-radix-cache"], ["--kv-cache-free"]):
        _, env = _cmd(["--model-path", model, *flags], on_cpu=False, gpu_major=9)
        assert env["MOEP_ACTIVATION_RESERVE_MB"] == "6528"
    # elsewhere 8K chunks in batches of up to 16,384 tokens; the user's batch bound counts too
    _, env = _cmd(["--model-path", model], on_cpu=False, gpu_major=8)
    assert env["MOEP_ACTIVATION_RESERVE_MB"] == "3264"
    _, env = _cmd(["--model-path", model, "--max-prefill-tokens", "65536"], on_cpu=False,
                  gpu_major=9)
    assert env["MOEP_ACTIVATION_RESERVE_MB"] == "13056"
    # The user's batch size or memory fraction, AsyncEP, a hub name, CPU: SGLang's own rule.
    for argv, on_cpu in (([model, "--chunked-prefill-size", "32768"], False),
                         ([model, "--mem-fraction-static", "0.8"], False),
                         ([model, "--min-batch-flops", "1e12"], False),
                         (["Qwen/Qwen3-30B-A3B"], False), ([model], True)):
        _, env = _cmd(["--model-path", *argv], on_cpu=on_cpu, gpu_major=None if on_cpu else 9)
        assert "MOEP_ACTIVATION_RESERVE_MB" not in env, argv


def test_asyncep_and_batching_get_large_batches_without_prefill_graphs():
    for flags in (["--asyncep-size", "2", "--asyncep-rank", "0", "--asyncep-store", "h:1"],
                  ["--min-batch-flops", "1e12"]):
        cmd, _ = _cmd(["--model-path", "m", *flags], on_cpu=False, gpu_major=9)
        assert _value(cmd, "--chunked-prefill-size") == "32768"
        assert _value(cmd, "--cuda-graph-backend-prefill") == "disabled"


def test_user_flags_win_over_gpu_defaults():
    cmd, _ = _cmd(["--model-path", "m", "--attention-backend=flashinfer",
                   "--chunked-prefill-size", "8192"], on_cpu=False, gpu_major=9)
    assert "--attention-backend" not in cmd and "--attention-backend=flashinfer" in cmd
    assert cmd.count("--chunked-prefill-size") == 1 and "8192" in cmd


def test_kv_events_port_and_threads():
    cmd, env = _cmd(["--model-path", "m", "--kv-events-port", "5557", "--cpu-threads", "2"])
    config = json.loads(cmd[cmd.index("--kv-events-config") + 1])
    assert config == {"publisher": "zmq", "endpoint": "tcp://*:5557",
                      "replay_endpoint": "tcp://*:5558", "topic": "kv"}
    assert env["OMP_NUM_THREADS"] == "2"


def test_kv_events_port_conflicts_with_sglang_flag():
    with pytest.raises(SystemExit):
        parse_launch_args(["--kv-events-port", "1", "--kv-events-config", "{}"], on_cpu=True)


def test_fp8_checkpoint_on_cpu_runs_in_bfloat16(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}))
    cmd, _ = _cmd(["--model-path", str(tmp_path)])
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16" and cmd.count("--dtype") == 1
    cmd, _ = _cmd(["--model-path", str(tmp_path), "--dtype", "float16"])
    assert cmd[cmd.index("--dtype") + 1] == "float16" and cmd.count("--dtype") == 1
    cmd, _ = _cmd(["--model-path", str(tmp_path)], on_cpu=False)
    assert "--dtype" not in cmd  # on GPUs SGLang's own choice (the config's dtype)
    cmd, _ = _cmd(["--model-path", "m", "--quantization", "fp8"])  # online quantization
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"
