import json

import pytest

from moep_sglang.server.launch import CPU_DEFAULTS, build_command, parse_launch_args


def _cmd(argv, on_cpu=True):
    return build_command(parse_launch_args(argv, on_cpu=on_cpu))


def test_cpu_defaults_added_and_env_set():
    cmd, env = _cmd(["--model-path", "m"])
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    for flag, value in CPU_DEFAULTS:
        assert cmd[cmd.index(flag) + 1] == value
    assert env["SGLANG_USE_CPU_ENGINE"] == "1"


def test_user_flags_win_over_cpu_defaults():
    cmd, _ = _cmd(["--model-path", "m", "--max-total-tokens", "999", "--dtype=bfloat16"])
    assert cmd.count("--max-total-tokens") == 1 and "999" in cmd
    assert "--dtype" not in cmd and "--dtype=bfloat16" in cmd


def test_gpu_gets_no_cpu_defaults():
    cmd, env = _cmd(["--model-path", "m", "--tp", "4"], on_cpu=False)
    assert cmd[3:] == ["--model-path", "m", "--tp", "4"]
    assert "SGLANG_USE_CPU_ENGINE" not in env or env["SGLANG_USE_CPU_ENGINE"] != "1"


def test_kv_events_port_and_threads():
    cmd, env = _cmd(["--model-path", "m", "--kv-events-port", "5557", "--cpu-threads", "2"])
    config = json.loads(cmd[cmd.index("--kv-events-config") + 1])
    assert config == {"publisher": "zmq", "endpoint": "tcp://*:5557",
                      "replay_endpoint": "tcp://*:5558", "topic": "kv"}
    assert env["OMP_NUM_THREADS"] == "2"


def test_kv_events_port_conflicts_with_sglang_flag():
    with pytest.raises(SystemExit):
        parse_launch_args(["--kv-events-port", "1", "--kv-events-config", "{}"], on_cpu=True)
