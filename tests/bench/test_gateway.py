"""bench/gateway.py: reading smg's replies (the gateway itself runs in the router benchmarks)."""

from pathlib import Path

from bench.gateway import SmgGateway, num_workers


def test_smg_worker_list_shapes():
    assert num_workers({"workers": [{"url": "a"}, {"url": "b"}]}) == 2
    assert num_workers([{"url": "a"}]) == 1
    assert num_workers({"status": "starting"}) == 0


def test_smg_command_names_every_worker_and_the_policy(tmp_path):
    gw = SmgGateway(["http://a:1", "http://b:2"], "prefix_hash", log_path=tmp_path / "smg.log")
    cmd = gw.cmd
    assert cmd[1] == "launch" and cmd[cmd.index("--policy") + 1] == "prefix_hash"
    i = cmd.index("--worker-urls")
    assert cmd[i + 1:i + 3] == ["http://a:1", "http://b:2"]
    assert gw.url == f"http://127.0.0.1:{gw.port}" and gw.log_path == Path(tmp_path / "smg.log")
