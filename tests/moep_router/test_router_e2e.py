"""moep-router in front of two real SGLang workers on CPU (tiny preset)."""

import concurrent.futures as cf
import time

import orjson
import pytest

from tests.helpers import RouterProcess, post, post_with_headers, worker_spec

DOC = "The engineer explained that the complex system was safe because the team decided so. " * 4


@pytest.fixture(scope="module")
def router(tiny_model, workers, log_dir):
    r = RouterProcess(tiny_model, [worker_spec(w) for w in workers], log_dir / "router.log")
    yield r.wait_healthy()
    r.stop()


def _requests_per_worker(router) -> dict[str, int]:
    return {w["url"]: w["requests"] for w in router.get("/workers")[1]["workers"]}


def test_score_through_router_equals_the_worker(router, workers):
    body = {"query": "Is the hotel good? Answer:", "items": [" It was clean.", " It was loud."],
            "label_token_ids": [661, 362], "apply_softmax": True}
    status, via = post(f"{router.url}/v1/score", body)
    assert status == 200, via
    _, direct = post(f"{workers[0].config.url}/v1/score", body)
    for a, b in zip(via["scores"], direct["scores"]):
        assert a == pytest.approx(b, abs=1e-4)
    usage = via["usage"]
    assert usage["prompt_tokens"] == direct["usage"]["prompt_tokens"] and usage["flops"] > 0


def test_shared_prefix_stays_on_one_worker_and_hits_its_cache(router):
    # Sent one after another, each as soon as the last is answered: the answer can beat the
    # worker's KV events to the router, and the finished request's settling promise
    # (--pending-settle-s) keeps the follow-up on the worker that cached the document.
    before = _requests_per_worker(router)
    cached, flops = [], []
    for q in ("Is it safe?", "Is it complex?", "Was the team right?", "Is it true?"):
        status, body = post(f"{router.url}/v1/score", {
            "query": DOC, "items": [f" Question: {q} Answer:"], "label_token_ids": [661, 362]})
        assert status == 200, body
        cached.append(body["usage"]["cached_tokens"])
        flops.append(body["usage"]["flops"])
    after = _requests_per_worker(router)
    assert sorted(after[u] - before[u] for u in after) == [0, 4]  # all on one worker
    assert cached[0] < 10 and min(cached[1:]) > 60  # the document is reused after the first
    assert max(flops[1:]) < flops[0] / 2  # and costs accordingly less


def test_index_is_learned_from_kv_events(router):
    status, body = post(f"{router.url}/generate", {"text": "Zq unique prompt for the index " * 3})
    assert status == 200 and body["meta_info"]["flops"] > 0
    # KV events reach the router asynchronously: allow them a few seconds on a loaded machine.
    deadline = time.monotonic() + 10
    while True:
        blocks = [w["cached_blocks"] for w in router.get("/workers")[1]["workers"]]
        if max(blocks) > 20 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert max(blocks) > 20


def test_classify_and_rerank(router):
    status, body = post(f"{router.url}/v1/classify", {
        "input": ["The hotel was clean.", "The hotel was dirty."],
        "labels": ["positive", "negative"]})
    assert status == 200 and [d["index"] for d in body["data"]] == [0, 1]
    assert all(abs(sum(d["probs"]) - 1) < 1e-6 for d in body["data"])
    status, body = post(f"{router.url}/v1/rerank", {
        "query": "hotel", "documents": ["The hotel was good.", "The river was quiet.", "x"],
        "top_n": 2, "return_documents": True})
    assert status == 200 and len(body["results"]) == 2 and "document" in body["results"][0]
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


BAD = [
    (b'{"query": "x", "items": [', 400, "malformed JSON"),
    (b'[1, 2]', 400, "must be an object"),
    (b'{"query": "x", "items": ["y"], "label_token_ids": [1], "model": "other"}', 404, "unknown model"),
    (b'{"query": "x", "items": [], "label_token_ids": [1]}', 400, "non-empty"),
    (b'{"query": "x", "items": ["y"], "label_token_ids": [99999]}', 400, "outside"),
    (b'{"query": "x", "items": ["y"]}', 400, "label_token_ids"),
]


@pytest.mark.parametrize("raw,status,message", BAD)
def test_bad_input_gets_4xx_with_message(router, raw, status, message):
    got, body = post(f"{router.url}/v1/score", raw)
    assert got == status and message in body["message"]


def test_oversized_requests_get_413_and_the_router_keeps_serving(router):
    body = {"query": "x", "items": ["y"] * 100_000, "label_token_ids": [661]}
    status, reply = post(f"{router.url}/v1/score", body)
    assert status == 413 and "--max-items-per-request" in reply["message"]
    ok = post(f"{router.url}/v1/score", {"query": "x", "items": ["y"], "label_token_ids": [661]})
    assert ok[0] == 200 and len(ok[1]["scores"]) == 1


def test_the_longest_prompt_the_workers_take_passes_and_one_more_token_is_the_routers_400(
        router, workers):
    longest = 2048 - 7  # the tiny model's context less SGLang 0.5.17's margin
    body = {"input_ids": [5] * longest, "sampling_params": {"max_new_tokens": 0}}
    status, reply = post(f"{router.url}/generate", body)
    assert status == 200 and reply["meta_info"]["prompt_tokens"] == longest
    over = {**body, "input_ids": [5] * (longest + 1)}
    status, reply = post(f"{router.url}/generate", over)
    assert status == 400 and "takes at most 2041 (context 2048)" in reply["message"]
    status, direct = post(f"{workers[0].config.url}/generate", over)  # the rule is SGLang's
    assert status == 400 and "maximum allowed length (2042 tokens)" in str(direct)


def test_a_workers_400_reaches_the_client_as_its_own_words(router, workers):
    body = {"text": "The hotel", "sampling_params": {"max_new_tokens": 0, "top_p": 2.0}}
    status, direct = post(f"{workers[0].config.url}/generate", body)
    assert status == 400, direct
    status, via = post(f"{router.url}/generate", body)
    assert status == 400 and via["message"] == direct["error"]["message"], (direct, via)


def test_a_request_id_follows_the_request_to_the_worker(router):
    url = f"{router.url}/generate"
    status, body, headers = post_with_headers(url, {"text": "The hotel was clean."},
                                              {"X-Request-Id": "trace-7"})
    assert status == 200 and headers["X-Request-Id"] == "trace-7"
    assert body["meta_info"]["id"].startswith("trace-7-")  # the worker's rid: in its logs too
    # a batch: SGLang numbers the prompts of one rid
    status, body, _ = post_with_headers(url, {"text": ["a b", "c d"]}, {"X-Request-Id": "tr-8"})
    assert status == 200 and [b["meta_info"]["id"][-2:] for b in body] == ["_0", "_1"]
    assert all(b["meta_info"]["id"].startswith("tr-8-") for b in body)
    # the same id twice at once (a client that reuses its ids): both answered
    with cf.ThreadPoolExecutor(2) as pool:
        twice = list(pool.map(lambda _: post_with_headers(url, {"text": DOC},
                                                          {"X-Request-Id": "same"}), range(2)))
    assert [s for s, _, _ in twice] == [200, 200]
    # none given: the router makes one, and errors carry it too
    status, body, headers = post_with_headers(
        url, {"text": "x", "sampling_params": {"max_new_tokens": 0, "top_p": 2.0}}, {})
    assert status == 400 and len(headers["X-Request-Id"]) >= 18


def test_access_log_has_a_line_per_request_from_every_router_process(tiny_model, workers,
                                                                    log_dir, tmp_path):
    access = tmp_path / "access.jsonl"
    r = RouterProcess(tiny_model, [worker_spec(w) for w in workers], log_dir / "router-acc.log",
                      "--access-log", str(access), "--processes", "2").wait_healthy()
    try:
        body = {"query": DOC, "items": [" Is it safe? Answer:", " Why? Answer:"],
                "label_token_ids": [661, 362]}
        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post_with_headers(
                f"{r.url}/v1/score", body, {"X-Request-Id": f"acc-{i}"}), range(40)))
        status, _, headers = post_with_headers(f"{r.url}/v1/score", {**body, "items": []}, {})
    finally:
        r.stop()
    assert [a[0] for a in answers] == [200] * 40 and status == 400
    lines = [orjson.loads(x) for x in access.read_bytes().splitlines()]  # each whole JSON
    by_id = {x["request_id"]: x for x in lines}
    assert len(lines) == 41 and set(by_id) == {f"acc-{i}" for i in range(40)} | {
        headers["X-Request-Id"]}
    ok = by_id["acc-0"]
    assert ok["endpoint"] == "/v1/score" and ok["status"] == 200 and ok["prompts"] == 2
    assert ok["prompt_tokens"] > 0 and ok["flops"] > 0 and ok["latency_ms"] > 0
    assert ok["worker"] in {w.config.url for w in workers} and ok["error"] == ""
    assert sum(x["cached_tokens"] for x in lines) > 0  # the same prompts, answered from cache
    refused = by_id[headers["X-Request-Id"]]
    assert refused["status"] == 400 and "items" in refused["error"] and refused["worker"] == ""


def test_health_reports_workers_and_kv_sync(router):
    status, body = router.get("/health")
    assert status == 200 and body["kv_synced"] is True and body["healthy_workers"] == 2


def test_metrics_exposed(router):
    status, text = router.get("/metrics")
    assert status == 200 and "moep_router_requests_total" in text
    assert "moep_router_worker_cached_blocks" in text and "moep_router_flops_total" in text


def _tokenize_cache_lookups(router) -> dict[str, float]:
    text = router.get("/metrics")[1]
    return {result: float(line.rsplit(" ", 1)[1]) for result in ("hit", "miss")
            for line in text.splitlines()
            if line.startswith(f'moep_router_tokenize_cache_lookups_total{{result="{result}"}}')}


def test_a_repeated_long_query_is_tokenized_once_and_scores_as_the_worker_does(router, workers):
    query = f"Case 7731. {DOC * 2} Is it safe?"  # over 512 characters: cached

    def body(item):
        return {"query": query, "items": [item], "label_token_ids": [661, 362]}

    before = _tokenize_cache_lookups(router)
    assert post(f"{router.url}/v1/score", body(" Answer:"))[0] == 200
    status, via = post(f"{router.url}/v1/score", body(" Reply:"))  # the query's ids from the cache
    assert status == 200, via
    after = _tokenize_cache_lookups(router)
    assert after["hit"] - before.get("hit", 0) == 1 and after["miss"] - before.get("miss", 0) == 1
    _, direct = post(f"{workers[0].config.url}/v1/score", body(" Reply:"))
    assert via["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert via["scores"][0] == pytest.approx(direct["scores"][0], abs=1e-4)


def test_router_queues_then_rejects_with_retry_after(tiny_model, workers, log_dir):
    """T = 1 FLOP: a worker with anything outstanding is saturated; the queue holds 2."""
    r = RouterProcess(tiny_model, [worker_spec(w) for w in workers], log_dir / "router-q.log",
                      "--threshold-flops", "1", "--max-queue", "2")
    try:
        body = {"query": DOC * 3, "items": [" Answer:"], "label_token_ids": [661]}
        # 32 at once, each long enough (~240 tokens) that they overlap on a loaded 2-core machine
        # (24 prompts of ~60 tokens once all finished one by one: none was rejected)
        with cf.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(
                lambda i: post_with_headers(f"{r.url}/v1/score",
                                            {**body, "query": f"{i} {DOC * 4}"}, {}), range(32)))
        codes = [c for c, _, _ in results]
        assert codes.count(200) >= 4 and codes.count(429) >= 1, codes
        assert set(codes) <= {200, 429}
        assert all(h.get("Retry-After") for c, _, h in results if c == 429)
        assert post(f"{r.url}/v1/score", body)[0] == 200  # and it drains
    finally:
        r.stop()


def test_api_key(tiny_model, workers, log_dir):
    r = RouterProcess(tiny_model, [worker_spec(workers[0])], log_dir / "router-key.log",
                      "--api-key", "s3cret")
    try:
        body = {"query": "x", "items": ["y"], "label_token_ids": [661]}
        assert post_with_headers(f"{r.url}/v1/score", body, {})[0] == 401
        ok = post_with_headers(f"{r.url}/v1/score", body, {"Authorization": "Bearer s3cret"})
        assert ok[0] == 200
        assert r.wait_healthy(30).get("/health")[0] == 200  # /health needs no key
    finally:
        r.stop()


def _blocks(router) -> dict[str, int]:
    return {w["url"]: w["cached_blocks"] for w in router.get("/workers")[1]["workers"]}


def _wait_blocks(router, at_least: dict[str, int], timeout_s: float = 15) -> None:
    """Until each worker's index holds at_least[url] blocks (KV events arrive asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _blocks(router)
        if all(now[u] >= n for u, n in at_least.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"cached blocks {_blocks(router)}, waited for {at_least}")


def test_many_items_split_over_the_workers_holding_the_prefix(router, workers):
    query = "Zs split query. " + DOC
    # Items that differ in their first token: the prompts share exactly the query.
    items = [f"{('Yes', 'No', 'Maybe', 'Sure')[i % 4]}, item {i} is safe." for i in range(64)]
    body = {"query": query, "items": items, "label_token_ids": [661, 362], "apply_softmax": True}
    before = _requests_per_worker(router)
    status, fresh = post(f"{router.url}/v1/score", {**body, "query": "Zn never seen. " + DOC})
    assert status == 200, fresh  # a prefix no worker holds: one worker, not split
    after = _requests_per_worker(router)
    assert sorted(after[u] - before[u] for u in after) == [0, 1]
    blocks = _blocks(router)
    for w in workers:  # both workers now hold the query (sent to them directly)
        status, _ = post(f"{w.config.url}/v1/score", {**body, "items": ["Warm."]})
        assert status == 200
    _wait_blocks(router, {u: n + 40 for u, n in blocks.items()})
    before = _requests_per_worker(router)
    status, via = post(f"{router.url}/v1/score", body)
    assert status == 200, via
    after = _requests_per_worker(router)
    assert sorted(after[u] - before[u] for u in after) == [1, 1]  # one sibling on each
    _, direct = post(f"{workers[0].config.url}/v1/score", body)
    assert len(via["scores"]) == 64
    for a, b in zip(via["scores"], direct["scores"]):  # merged in item order
        assert a == pytest.approx(b, abs=1e-4)
    assert via["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert via["usage"]["cached_tokens"] >= 64 * 40  # each sibling found the query cached
    _, metrics = router.get("/metrics")
    assert "moep_router_split_requests_total 1.0" in str(metrics)
