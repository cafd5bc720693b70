"""WorkerState owns its transitions (routing bookkeeping, failures, health, re-admission)."""

from moep_router.config import WorkerSpec
from moep_router.pending import PendingPrefixes
from moep_router.policies import make_policy
from moep_router.policies.base import RouteParams
from moep_router.prefix_keys import CHUNK, PromptKeys
from moep_router.workers import WorkerRegistry, WorkerState


def _worker(settle_s: float = 1.0) -> WorkerState:
    return WorkerRegistry(default_threshold=10.0, pending_settle_s=settle_s).add(
        WorkerSpec("http://w:1"))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _settling_worker(url: str, clock: _Clock) -> WorkerState:
    return WorkerState(WorkerSpec(url), 10.0, pending=PendingPrefixes(1.0, clock=clock))


def _stored(state: WorkerState, tokens: tuple[int, ...]) -> None:
    for i, t in enumerate(tokens):  # page size 1: one block per token, chained
        state.index.apply_stored([i + 1], i or None, [t], 1)


def test_reserve_and_release_balance_the_load_and_the_pending_prefix():
    w = _worker(settle_s=0.0)  # no settling: the prefix is promised while in flight only
    key = PromptKeys(tuple(range(2 * CHUNK)))  # pending prefixes count whole chunks
    w.reserve(key, 5.0)
    assert (w.num_inflight, w.outstanding_flops, w.match_len(key)) == (1, 5.0, 2 * CHUNK)
    w.release(key, 5.0)
    assert (w.num_inflight, w.outstanding_flops, w.match_len(key)) == (0, 0.0, 0)


def test_a_finished_prefix_stays_promised_until_its_kv_events_can_have_landed():
    clock = _Clock()
    w = _settling_worker("http://w:1", clock)
    key = PromptKeys(tuple(range(2 * CHUNK)))
    w.reserve(key, 5.0)
    w.release(key, 5.0)
    # The load is released at once; the prefix stays matchable for settle_s (1 s) more.
    assert (w.num_inflight, w.outstanding_flops, w.match_len(key)) == (0, 0.0, 2 * CHUNK)
    assert w.pending.num_prompts == 0 and w.pending.num_settling == 1
    clock.now += 0.99
    assert w.match_len(key) == 2 * CHUNK
    clock.now += 0.02
    assert w.match_len(key) == 0 and w.pending.num_settling == 0


def test_a_sequential_follow_up_goes_where_its_prefix_was_just_answered():
    # A client sends its next request as soon as the answer arrives, before the worker's KV
    # events reach the router: the worker that answered must still win on its prefix, though
    # it is the busier one (without the settling promise the policy picks the idle worker).
    clock = _Clock()
    answered, idle = _settling_worker("http://a:1", clock), _settling_worker("http://b:1", clock)
    doc = tuple(range(1000, 1000 + 4 * CHUNK))
    first, other = PromptKeys(doc + (1, 2)), PromptKeys(tuple(range(5000, 5000 + 3 * CHUNK)))
    answered.reserve(first, 3.0)
    answered.reserve(other, 3.0)  # still in flight: `answered` stays the busier worker
    answered.release(first, 3.0)
    follow_up = PromptKeys(doc + (3, 4))
    views = tuple(w.view(follow_up, lambda m: 1.0) for w in (answered, idle))
    picked = make_policy("true_flops").route(RouteParams(follow_up.tokens, views)).worker_id
    assert picked == "http://a:1"


def test_a_lost_worker_forgets_settling_prefixes_but_not_those_in_flight():
    clock = _Clock()
    w = _settling_worker("http://w:1", clock)
    done, running = PromptKeys(tuple(range(CHUNK))), PromptKeys(tuple(range(50, 50 + CHUNK)))
    for key in (done, running):
        w.reserve(key, 1.0)
    w.release(done, 1.0)
    w.request_failed()  # its process is presumed gone, and its cache with it
    assert w.match_len(done) == 0 and w.match_len(running) == CHUNK
    assert w.pending.num_settling == 0 and w.pending.num_prompts == 1


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


def test_an_added_worker_is_out_until_its_first_check_answers():
    registry = WorkerRegistry(default_threshold=10.0)
    ok, down = registry.add(WorkerSpec("http://a:1")), registry.add(WorkerSpec("http://b:1"))
    for w in (ok, down):
        w.await_admission()
    assert registry.healthy() == [] and registry.any_starting()
    assert ok.check_passed() and ok.healthy and not ok.starting  # admitted: a transition
    assert not down.check_failed(True, 3)  # never in: no transition out
    assert not down.healthy and not down.starting and down.lost
    assert registry.healthy() == [ok] and not registry.any_starting()
