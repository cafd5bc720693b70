"""`moep-sglang serve`'s plan for a node (pure: no processes): ports, groups, worker flags."""

import argparse
from pathlib import Path

import pytest

from moep_sglang.server.node import NodeConfig, WorkerGroup, add_serve_args, parse_node_args


def _args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    (tmp_path / "config.json").write_text("{}")
    p = argparse.ArgumentParser()
    add_serve_args(p)
    return p.parse_args(["--model-path", str(tmp_path), *argv])


def test_one_asyncep_group_per_gpu_node_by_default(tmp_path):
    c = parse_node_args(_args(tmp_path, "--worker-base-port", "40000"), gpus=4)
    assert (c.num_workers, c.mode, c.on_gpu) == (4, "asyncep", True)
    assert c.groups() == [(0, 1, 2, 3)]
    assert c.worker_specs()[1] == "http://127.0.0.1:40001,kv=tcp://127.0.0.1:41002"
    w = c.worker_config(3)
    argv = list(w.extra_args)
    assert (w.port, w.kv_events_port) == (40003, 41006)
    assert argv[argv.index("--base-gpu-id") + 1] == "3"
    assert argv[argv.index("--asyncep-rank") + 1] == "3"
    assert argv[argv.index("--asyncep-store") + 1] == "127.0.0.1:40999"
    assert argv[argv.index("--asyncep-backend") + 1] == "peer"


def test_cpu_node_runs_replicas_each_its_own_failure_domain(tmp_path):
    c = parse_node_args(_args(tmp_path, "--workers", "3", "--worker-arg=--max-total-tokens=4096"),
                        gpus=0)
    assert (c.mode, c.on_gpu, c.groups()) == ("replicas", False, [(0,), (1,), (2,)])
    argv = c.worker_config(1).extra_args
    # no GPU id, no AsyncEP flags on CPU replicas; torch.distributed's port inside the block
    assert argv == ("--max-total-tokens=4096", "--nccl-port", "32001")
    assert parse_node_args(_args(tmp_path), gpus=0).num_workers == 1
    assert parse_node_args(_args(tmp_path, "--mode", "replicas"), gpus=2).groups() == [(0,), (1,)]


@pytest.mark.parametrize("argv,gpus,message", [
    (("--workers", "3"), 2, "this node has 2 GPU"),
    (("--mode", "asyncep"), 0, "needs 2 or more workers"),
    (("--workers", "0"), 0, "must be >= 1"),
    (("--worker-base-port", "63600", "--workers", "2"), 0, "leaves no room"),
    (("--worker-arg=--base-gpu-id=2",), 2, "is set by serve itself"),
    (("--worker-arg=--port",), 0, "is set by serve itself"),
])
def test_bad_node_plans_are_refused_with_a_reason(tmp_path, argv, gpus, message):
    with pytest.raises(SystemExit, match=message):
        parse_node_args(_args(tmp_path, *argv), gpus=gpus)


def test_missing_model_is_refused(tmp_path):
    p = argparse.ArgumentParser()
    add_serve_args(p)
    with pytest.raises(SystemExit, match="no config.json"):
        parse_node_args(p.parse_args(["--model-path", str(tmp_path / "nope")]), gpus=0)


def test_failed_starts_back_off_up_to_a_cap():
    g = WorkerGroup((0,))
    delays = [g.start_failed(100.0) for _ in range(7)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert g.next_start == 130.0 and g.name == "worker 0"


def test_config_is_frozen(tmp_path):
    c = parse_node_args(_args(tmp_path), gpus=0)
    assert isinstance(c, NodeConfig)
    with pytest.raises(AttributeError):
        c.num_workers = 2


def test_workers_only_advertises_an_address_other_machines_reach(tmp_path):
    c = parse_node_args(_args(tmp_path, "--workers-only", "--worker-host=0.0.0.0"), gpus=0)
    assert c.worker_specs()[0].startswith("http://127.0.0.1:")  # from this machine
    assert c.advertised_host() != "127.0.0.1"
    c = parse_node_args(_args(tmp_path, "--worker-host=10.1.2.3"), gpus=0)
    assert c.worker_specs()[0].startswith("http://10.1.2.3:") and c.worker_config(0).url.startswith(
        "http://10.1.2.3:")


def test_a_worker_port_block_never_holds_a_port_handed_out_before(monkeypatch):
    """The demo hands out the router's port first, then the workers' block: a block that held
    it (here as worker 1's NCCL port) left the router EADDRINUSE once the worker bound it."""
    import random

    from moep_sglang.server.node import NCCL_PORT_OFFSET, block_ports, free_base_port
    from moep_sglang.server.worker_process import free_port

    router_port = free_port()  # handed out, not bound yet
    colliding = router_port - NCCL_PORT_OFFSET - 1
    tries = [colliding]
    real = random.randrange
    monkeypatch.setattr(random, "randrange", lambda lo, hi: tries.pop(0) if tries else real(lo, hi))
    base = free_base_port(2)
    assert not tries  # the colliding block was offered first ...
    assert base != colliding  # ... and passed over
    assert colliding + NCCL_PORT_OFFSET + 1 == router_port  # (worker 1's NCCL port)
    assert router_port in block_ports(colliding, 2) and router_port not in block_ports(base, 2)
