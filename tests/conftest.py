import os
from pathlib import Path

import pytest

from moep_sglang import envs
from moep_sglang.server.worker_process import free_port_pair
from tests.helpers import ensure_model, start_worker


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


def pytest_configure(config):
    # Workers in tests share 2 cores with pytest: one torch thread each keeps them responsive.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
