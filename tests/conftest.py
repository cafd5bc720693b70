import os
from pathlib import Path

import pytest

from moep_sglang import envs
from moep_sglang.server.worker_process import free_port_pair
from tests.helpers import RouterProcess, ensure_model, start_worker, worker_spec


@pytest.fixture(scope="session")
def model_root() -> Path:
    root = envs.model_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_model(model_root) -> Path:
    return ensure_model(model_root, "tiny")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="module")
def workers(tiny_model, log_dir):
    """Two real tiny CPU workers publishing KV events, for the router and SDK test modules.

    Module scope, not session: an idle SGLang CPU scheduler keeps polling (~50% of a core), so
    workers kept alive across modules slow every later test on a 2-core machine."""
    ws = [start_worker(tiny_model, log_dir, kv_events_port=free_port_pair(), cpu_threads=1)
          for _ in range(2)]
    yield ws
    for w in ws:
        w.stop()


@pytest.fixture(scope="module")
def worker(tiny_model, log_dir):
    """One real tiny CPU worker (module scope, as `workers`), for the modules that run other
    projects' client SDKs (OpenAI's, Cohere's) through the router; a module may define its own."""
    w = start_worker(tiny_model, log_dir, cpu_threads=1)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def router(request, tiny_model, worker, log_dir):
    """moep-router in front of `worker`, its log named for the module."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    r = RouterProcess(tiny_model, [worker_spec(worker)], log_dir / f"router-{name}.log")
    yield r.wait_healthy()
    r.stop()


def pytest_configure(config):
    # Workers in tests share 2 cores with pytest: one torch thread each keeps them responsive.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
