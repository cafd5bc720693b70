"""request_ids: the client's X-Request-Id or a new one, and the worker rid made from it."""

import re

from moep_router.request_ids import RequestIds, worker_rid


def test_new_ids_are_unique_within_and_across_router_processes():
    a, b = RequestIds(), RequestIds()
    ids = [a.new() for _ in range(1000)] + [b.new() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{18,}", i) for i in ids)


def test_the_clients_id_is_kept_and_a_bad_one_refused():
    ids = RequestIds()
    assert ids.of({"x-request-id": "trace-42:a/b"}) == "trace-42:a/b"
    assert len(ids.of({})) >= 18  # none sent: a new one
    for bad in ("", "has space", "x" * 129, "é"):
        assert ids.of({"x-request-id": bad}) is None
    assert ids.of({"x-request-id": "x" * 128}) == "x" * 128


def test_every_attempt_on_a_worker_gets_its_own_rid_that_starts_with_the_id():
    rids = {worker_rid("trace-42") for _ in range(100)}
    assert len(rids) == 100 and all(re.fullmatch(r"trace-42-[0-9a-f]{8}", r) for r in rids)
