"""split_job: a request of many prompts -> siblings; a worker's 4xx body -> its words (pure logic;
the router tests run both live)."""

import pytest

from moep_router.dispatcher import worker_message, split_job
from moep_router.jobs import Job


def _job(n: int) -> Job:
    return Job("score", tuple((1, 2, 3, 100 + i) for i in range(n)), 3, (7,), True, {}, {})


def test_one_sibling_per_holder_in_prompt_order():
    job = _job(100)
    parts = split_job(job, holders=3, min_items=32)
    assert [len(p.prompts) for p in parts] == [33, 33, 34]
    assert tuple(q for p in parts for q in p.prompts) == job.prompts
    assert all(p.prefix_len == 3 and p.label_token_ids == (7,) for p in parts)


def test_siblings_never_smaller_than_min_items():
    assert [len(p.prompts) for p in split_job(_job(100), holders=8, min_items=32)] == [33, 33, 34]
    assert [len(p.prompts) for p in split_job(_job(63), holders=8, min_items=32)] == [63]
    assert [len(p.prompts) for p in split_job(_job(64), holders=8, min_items=32)] == [32, 32]


def test_no_split_with_one_holder_or_when_disabled():
    job = _job(1000)
    assert split_job(job, holders=1, min_items=32) == [job]
    assert split_job(job, holders=0, min_items=32) == [job]
    assert split_job(job, holders=8, min_items=0) == [job]


def _dispatcher(model, registry):
    from moep_router.config import RouterConfig
    from moep_router.cost import CostModel
    from moep_router.dispatcher import Dispatcher
    from moep_router.metrics import RouterMetrics
    from moep_router.model_spec import ModelSpec
    from moep_router.policies import make_policy

    return Dispatcher(RouterConfig(model_path=model, workers=()), registry,
                      make_policy("true_flops"), CostModel.from_spec(ModelSpec.from_model_dir(model)),
                      RouterMetrics())


def test_a_request_waits_for_a_starting_workers_first_check(tiny_model):
    """While every worker awaits its first health check the request queues (no 503), and goes
    to the worker once the check admits it; a failed first check answers 503."""
    import asyncio

    import pytest

    from moep_router.config import WorkerSpec
    from moep_router.dispatcher import Overloaded
    from moep_router.workers import WorkerRegistry

    async def scenario(passes: bool):
        registry = WorkerRegistry()
        worker = registry.add(WorkerSpec("http://w:1"))
        worker.await_admission()
        d = _dispatcher(tiny_model, registry)
        admit = asyncio.ensure_future(d._admit(_job(1), set()))
        await asyncio.sleep(0.05)
        assert not admit.done() and d.num_waiting == 1
        worker.check_passed() if passes else worker.check_failed(False, 3)
        await d.wake()
        return await asyncio.wait_for(admit, 5)

    assert asyncio.run(scenario(True)).worker_id == "http://w:1"
    with pytest.raises(Overloaded, match="no healthy worker"):
        asyncio.run(scenario(False))


@pytest.mark.parametrize("body,words", [
    ({"error": {"message": "Input length (9 tokens) exceeds", "type": "BadRequest"}},
     "Input length (9 tokens) exceeds"),  # SGLang's /generate
    ({"object": "error", "message": "bad top_p", "code": 400}, "bad top_p"),  # its OpenAI API
    ({"detail": [{"loc": ["body", "x"], "msg": "field required"},
                 {"loc": ["body", "y"], "msg": "not an int"}]}, "field required; not an int"),
    ({"detail": "Not Found"}, "Not Found"),
    ("plain text", "plain text"),
])
def test_worker_4xx_bodies_are_reduced_to_their_words(body, words):
    assert worker_message(body) == words
