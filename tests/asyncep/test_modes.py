"""The paper's optional modes, correct on CPU: hybrid offload (both backends) and KV-cache-free."""

from __future__ import annotations

import pytest

from tests.asyncep.conftest import max_abs_diff, scores_of
from tests.helpers import start_group, stop_all


@pytest.mark.parametrize("backend", ["collective", "peer"])
def test_hybrid_offload_scores_equal_unsharded(backend, tiny_model, log_dir, reference_scores):
    want = reference_scores("tiny")
    group = start_group(tiny_model, log_dir, 2, backend, "--asyncep-offload")
    try:
        for w in group:
            assert max_abs_diff(scores_of(w.config.url), want) <= 1e-3
    finally:
        stop_all(group)


def test_kv_cache_free_scores_equal_unsharded(tiny_model, log_dir, reference_scores):
    want = reference_scores("tiny")
    group = start_group(tiny_model, log_dir, 2, "collective", "--kv-cache-free")
    try:
        for w in group:
            got = scores_of(w.config.url)
            assert max_abs_diff(got, want) <= 1e-3
            log = w.config.log_path.read_text(errors="replace")
            assert "disable_radix_cache=True" in log and "#cached-token: 0" in log
            assert "#cached-token: 1" not in log.replace("#cached-token: 1,", "")  # no reuse
    finally:
        stop_all(group)
