import os
from pathlib import Path

import pytest

from moep_sglang import envs
from tests.helpers import ensure_model


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


def pytest_configure(config):
    # Workers in tests share 2 cores with pytest: one torch thread each keeps them responsive.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
