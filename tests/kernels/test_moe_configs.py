"""moep's tuned fused-MoE configs: well-formed, found before SGLang's, and switchable off."""

import json

import pytest

from moep_sglang.kernels import moe_configs
from moep_sglang.plugin.moe_configs import tuned_first

REQUIRED = {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps",
            "num_stages"}


@pytest.fixture(autouse=True)
def _fresh_cache():
    moe_configs.find_config.cache_clear()
    yield
    moe_configs.find_config.cache_clear()


def test_shipped_configs_are_well_formed():
    files = sorted(moe_configs.SHIPPED_DIR.glob("triton_*/*.json"))
    for path in files:
        assert path.name.startswith("E=") and ",N=" in path.name and "device_name=" in path.name
        table = json.loads(path.read_text())
        assert table, path
        for m, cfg in table.items():
            assert int(m) > 0
            assert REQUIRED <= set(cfg), (path.name, m)
            assert cfg["BLOCK_SIZE_K"] % 16 == 0 and cfg["BLOCK_SIZE_M"] >= 16


def _write(folder, name, table):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(table))


def _patch_name(monkeypatch, name):
    import sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe_triton_config as cfgmod

    monkeypatch.setattr(cfgmod, "get_config_file_name", lambda *a, **k: name)


CFG = {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1,
       "num_warps": 8, "num_stages": 4}


def test_hook_prefers_user_dir_then_shipped_then_sglang(monkeypatch, tmp_path):
    import triton

    name = "E=8,N=32,device_name=TEST_GPU.json"
    _patch_name(monkeypatch, name)
    calls = []

    def sglang_lookup(*args, **kwargs):
        calls.append((args, kwargs))
        return {1: {"from": "sglang"}}

    # Neither folder has the file: SGLang's own lookup answers, with the arguments it was given.
    monkeypatch.setattr(moe_configs, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setenv("MOEP_MOE_CONFIG_DIR", str(tmp_path / "user"))
    assert tuned_first(sglang_lookup, 8, 32, None, 0, 0, down_moe=True) == {1: {"from": "sglang"}}
    assert calls == [((8, 32, None, 0, 0), {"per_channel_quant": False, "down_moe": True})]

    version = moe_configs.version_dir(triton.__version__)
    _write(tmp_path / "shipped" / version, name, {"4096": CFG})
    moe_configs.find_config.cache_clear()
    assert tuned_first(sglang_lookup, 8, 32, None) == {4096: CFG}

    _write(tmp_path / "user" / version, name, {"16": dict(CFG, BLOCK_SIZE_M=16)})
    moe_configs.find_config.cache_clear()
    assert tuned_first(sglang_lookup, 8, 32, None)[16]["BLOCK_SIZE_M"] == 16

    monkeypatch.setenv("MOEP_TUNED_MOE_CONFIGS", "0")
    moe_configs.find_config.cache_clear()
    assert tuned_first(sglang_lookup, 8, 32, None) == {1: {"from": "sglang"}}
    assert len(calls) == 2


def test_other_triton_version_is_not_used(monkeypatch, tmp_path):
    name = "E=8,N=32,device_name=TEST_GPU.json"
    monkeypatch.setattr(moe_configs, "SHIPPED_DIR", tmp_path)
    _write(tmp_path / "triton_9_9_9", name, {"1": CFG})
    assert moe_configs.find_config(name, "3.6.0") is None
    assert moe_configs.find_config(name, "9.9.9") == {1: CFG}


def test_down_configs_switch_off_alone(monkeypatch, tmp_path):
    import triton

    version = moe_configs.version_dir(triton.__version__)
    monkeypatch.setattr(moe_configs, "SHIPPED_DIR", tmp_path)
    up, down = "E=8,N=32,device_name=TEST_GPU.json", "E=8,N=32,device_name=TEST_GPU_down.json"
    _write(tmp_path / version, up, {"1": CFG})
    _write(tmp_path / version, down, {"1": dict(CFG, USE_TMA=True)})
    assert moe_configs.find_config(down, triton.__version__) == {1: dict(CFG, USE_TMA=True)}
    monkeypatch.setenv("MOEP_TUNED_MOE_DOWN", "0")
    moe_configs.find_config.cache_clear()
    assert moe_configs.find_config(down, triton.__version__) is None
    assert moe_configs.find_config(up, triton.__version__) == {1: CFG}
