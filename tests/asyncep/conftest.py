"""Shared requests and unsharded reference scores for the AsyncEP tests (real CPU workers)."""

from __future__ import annotations

import random

import pytest

from tests.helpers import ensure_model, score, start_worker

LABELS = [10, 20, 30]


def requests_for_scoring() -> list[tuple[list[int], list[list[int]]]]:
    """Scoring requests: varied lengths, two sharing a long prefix (radix-cache hits)."""
    rng = random.Random(7)
    shared = [rng.randrange(5, 600) for _ in range(48)]
    reqs = [(shared + [rng.randrange(5, 600) for _ in range(k)],
             [[rng.randrange(5, 600) for _ in range(rng.randrange(1, 9))] for _ in range(3)])
            for k in (3, 11)]
    reqs += [([rng.randrange(5, 600) for _ in range(n)],
              [[rng.randrange(5, 600) for _ in range(4)] for _ in range(2)])
             for n in (1, 7, 90)]
    return reqs


def scores_of(url: str) -> list[list[list[float]]]:
    return [score(url, q, items, LABELS) for q, items in requests_for_scoring()]


def max_abs_diff(a, b) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True)
               for ia, ib in zip(ra, rb, strict=True) for x, y in zip(ia, ib, strict=True))


_REFERENCE: dict[str, list] = {}


@pytest.fixture(scope="session")
def reference_scores(model_root, log_dir):
    """preset -> scores of one unsharded worker (computed once per preset)."""

    def get(preset: str):
        if preset not in _REFERENCE:
            model = ensure_model(model_root, preset)
            worker = start_worker(model, log_dir, cpu_threads=1)
            try:
                _REFERENCE[preset] = scores_of(worker.config.url)
            finally:
                worker.stop()
        return _REFERENCE[preset]

    return get
