"""WorkerState owns its transitions (routing bookkeeping, failures, health, re-admission)."""

from moep_router.config import WorkerSpec
from moep_router.prefix_keys import CHUNK, PromptKeys
from moep_router.workers import WorkerRegistry, WorkerState


def _worker() -> WorkerState:
    return WorkerRegistry(default_threshold=10.0).add(WorkerSpec("http://w:1"))


def _stored(state: WorkerState, tokens: tuple[int, ...]) -> None:
    for i, t in enumerate(tokens):  # page size 1: one block per token, chained
        state.index.apply_stored([i + 1], i or None, [t], 1)


def test_reserve_and_release_balance_the_load_and_the_pending_prefix():
    w = _worker()
    key = PromptKeys(tuple(range(2 * CHUNK)))  # pending prefixes count whole chunks
    w.reserve(key, 5.0)
    assert (w.num_inflight, w.outstanding_flops, w.match_len(key)) == (1, 5.0, 2 * CHUNK)
    w.release(key, 5.0)
    assert (w.num_inflight, w.outstanding_flops, w.match_len(key)) == (0, 0.0, 0)


def test_a_failed_request_takes_the_worker_out_and_forgets_its_cache():
    w = _worker()
    _stored(w, (7, 8))
    assert w.index.match_len(PromptKeys((7, 8))) == 2
    w.request_failed()
    assert not w.healthy and w.lost and w.num_failures == 1
    assert w.index.match_len(PromptKeys((7, 8))) == 0 and w.last_seq == -1


def test_unreachable_is_out_at_once_slow_only_after_max_failures():
    slow, gone = _worker(), _worker()
    assert [slow.check_failed(False, 3) for _ in range(3)] == [False, False, True]
    assert not slow.healthy and not slow.lost
    assert gone.check_failed(True, 3) and gone.lost
    assert not gone.check_failed(True, 3)  # already out: no second transition


def test_readmission_resets_the_index_only_of_a_lost_worker():
    slow, lost = _worker(), _worker()
    for w in (slow, lost):
        _stored(w, (4, 5))
        w.check_failed(w is lost, 1)
    _stored(lost, (9,))  # events that arrived while it was out (a restart's fresh ones)
    assert slow.check_passed() and lost.check_passed()
    assert slow.healthy and lost.healthy and not lost.lost
    assert slow.index.match_len(PromptKeys((4, 5))) == 2  # slow, not restarted: kept
    assert lost.index.match_len(PromptKeys((4, 5))) == 0  # restarted empty: reset
    assert not slow.check_passed()  # healthy already: nothing to re-admit
    assert slow.health_failures == 0 and slow.num_checks == 2


def test_reported_threshold_says_whether_it_changed():
    w = _worker()
    assert w.threshold_source == "default"
    assert w.threshold_reported(4.0) and w.threshold_source == "worker"
    assert not w.threshold_reported(4.0) and w.threshold_flops == 4.0
