"""split_job: a request of many prompts -> siblings (pure logic; the router test runs it live)."""

from moep_router.dispatcher import split_job
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
