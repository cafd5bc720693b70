"""The SDK and `moep-sglang score` against the router and two real CPU workers."""

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time

import pytest

from moep_sglang.client import AsyncClient, Client, MoepError
from moep_sglang.server.worker_process import free_port
from tests.helpers import RouterProcess, worker_spec

DOC = "The author wrote that the simple plan was honest and the team learned so. " * 3


@pytest.fixture(scope="module")
def router(tiny_model, workers, log_dir):
    zmq_port = free_port()
    r = RouterProcess(tiny_model, [worker_spec(w) for w in workers], log_dir / "router-sdk.log",
                      "--zmq-port", str(zmq_port))
    r.zmq_url = f"tcp://127.0.0.1:{zmq_port}"
    yield r
    r.stop()


def test_sync_client_all_endpoints(router):
    with Client(router.url) as c:
        s = c.score(DOC, [" Is it honest? Answer:"], [661, 362], apply_softmax=True)
        assert len(s.scores) == 1 and sum(s.scores[0]) == pytest.approx(1)
        assert s.usage.prompt_tokens > 0 and s.usage.flops > 0
        cl = c.classify(["The hotel was clean.", "The hotel was dirty."], ["positive", "negative"])
        assert [d.index for d in cl.data] == [0, 1] and cl.data[0].label in ("positive", "negative")
        rr = c.rerank("hotel", ["The hotel was good.", "The river was quiet."], top_n=1,
                      return_documents=True)
        assert len(rr.results) == 1 and rr.results[0].document
        long = "The hotel was good. " * 50
        whole = c.rerank("hotel", [long])
        cut = c.rerank("hotel", [long], return_documents=True, max_tokens_per_doc=4)
        assert cut.results[0].document == long  # as given; scored on its first 4 tokens
        assert whole.usage.prompt_tokens - cut.usage.prompt_tokens > 200  # of ~250 tokens
        g = c.generate("Hello there", sampling_params={"max_new_tokens": 0})
        assert g.raw["meta_info"]["prompt_tokens"] > 0
        cp = c.complete("The hotel was clean.", max_tokens=0, echo=True, logprobs=1)
        assert cp.choices[0].text == "The hotel was clean." and cp.usage.completion_tokens == 0
        ch = c.chat([{"role": "user", "content": "Clean? yes or no"}], logprobs=True,
                    top_logprobs=2, temperature=0)
        assert ch.choices[0].message.role == "assistant" and ch.usage.flops > 0
        assert len(ch.choices[0].logprobs.content[0].top_logprobs) == 2


def test_errors_raise_with_the_server_message(router):
    with Client(router.url) as c:
        with pytest.raises(MoepError, match="outside the vocabulary") as info:
            c.score("x", ["y"], [10**6])
        assert info.value.status == 400
        rid = info.value.request_id  # the router's id of the request, for its log
        assert rid and f"(request {rid})" in str(info.value)


def test_zmq_fast_path_equals_http(router, tiny_model):
    from moep_router.tokenize import RouterTokenizer

    tok = RouterTokenizer(tiny_model)
    query, items = tok.encode(DOC), tok.encode_continuation([" Answer:", " Really? Answer:"])

    async def run():
        async with AsyncClient(router.url, zmq_url=router.zmq_url) as fast, \
                AsyncClient(router.url) as http:
            a = await fast.score(query, items, [661, 362])
            b = await http.score(query, items, [661, 362])
            with pytest.raises(MoepError, match="label_token_ids"):
                await fast.score(query, items, [-1])
            many = await fast.batch("score", [{"query": query, "items": [i],
                                               "label_token_ids": [661]} for i in items * 10],
                                    progress=False)
            return a, b, many

    a, b, many = asyncio.run(run())
    for x, y in zip(a.scores, b.scores):
        assert x == pytest.approx(y, abs=1e-5)
    assert len(many) == 20 and all(m.usage.prompt_tokens > 0 for m in many)


def test_batch_retries_429_until_all_succeed(tiny_model, workers, log_dir):
    r = RouterProcess(tiny_model, [worker_spec(w) for w in workers], log_dir / "router-429.log",
                      "--threshold-flops", "1", "--max-queue", "0")
    try:
        bodies = [{"query": f"{i} {DOC}", "items": [" Answer:"], "label_token_ids": [661]}
                  for i in range(30)]
        with Client(r.url, max_concurrency=16, max_retries=20, backoff_s=0.05) as c:
            results = c.batch("score", bodies, progress=False)
        assert len(results) == 30 and all(x.scores for x in results)
        metrics = r.get("/metrics")[1]
        assert 'moep_router_rejected_total{reason="queue_full"}' in metrics  # 429s happened
    finally:
        r.stop()


def _score_lines(n: int, tag: str = "") -> list[dict]:
    return [{"query": DOC, "items": [f" {tag}Question {i}? Answer:"], "label_token_ids": [661, 362]}
            for i in range(n)]


def _score_cli(src, out, url, *extra, **kwargs):
    return subprocess.run([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src),
                           "--url", url, "--out", str(out), "--no-progress", *extra],
                          capture_output=True, text=True, **kwargs)


def test_score_cli_from_jsonl(router, tmp_path):
    src = tmp_path / "requests.jsonl"
    lines = [{"query": DOC, "items": [f" Question {i}? Answer:"], "label_token_ids": [661, 362]}
             for i in range(12)]
    lines.append({"query": "x", "items": [], "label_token_ids": [1]})  # a bad one
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "results.jsonl"
    res = _score_cli(src, out, router.url)
    assert res.returncode == 1  # one request failed, and the exit code says so
    assert "12 ok, 1 failed" in res.stderr and "cached" in res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 14))
    assert all("result" in r for r in rows[:12]) and rows[12]["error"]["status"] == 400
    assert rows[12]["error"]["request_id"]


def test_score_cli_runs_an_openai_batch_file(router, tmp_path):
    src = tmp_path / "batch.jsonl"
    chat = {"messages": [{"role": "user", "content": "Was it clean? yes or no"}],
            "max_tokens": 1, "logprobs": True, "top_logprobs": 2}
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": chat} for i in range(3)]
    lines.append({"custom_id": "s", "method": "POST", "url": "/v1/score", "body": {
        "query": DOC, "items": [" Is it honest? Answer:"], "label_token_ids": [661, 362]}})
    lines.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                  "body": {**chat, "max_tokens": 16}})
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "batch_out.jsonl"
    res = _score_cli(src, out, router.url)
    assert res.returncode == 1 and "4 ok, 1 failed" in res.stderr, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["c0", "c1", "c2", "s", "bad"]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows[:4])
    chat_body = rows[0]["response"]["body"]  # the router's JSON as sent
    assert chat_body["object"] == "chat.completion" and chat_body["usage"]["flops"] > 0
    assert rows[3]["response"]["body"]["object"] == "scoring"
    assert rows[4]["response"]["status_code"] == 400 and rows[4]["response"]["request_id"]
    assert "prefill-only" in rows[4]["response"]["body"]["error"]["message"]


@pytest.mark.parametrize("lines,message", [
    (['{"custom_id": "a", "url": "/v1/chat/completions", "body": {}}', '{"query": "x"}'],
     "mixes OpenAI batch lines"),
    (['{"custom_id": "a", "url": "/v1/embeddings", "body": {}}'], "not an endpoint"),
    (['{"custom_id": "a", "method": "GET", "url": "/v1/completions", "body": {}}'],
     "must be POST"),
])
def test_score_cli_rejects_a_bad_openai_batch_file(tmp_path, lines, message):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(lines) + "\n")
    res = subprocess.run([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and message in res.stderr, res.stderr


def test_score_cli_rejects_a_malformed_file(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"query": "x"}\nnot json\n')
    res = subprocess.run([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "bad.jsonl:2: not valid JSON" in res.stderr


def test_stream_requests_yields_in_order_and_reads_its_input_lazily(router):
    taken = []

    def bodies():
        for i, body in enumerate(_score_lines(40)):
            taken.append(i)
            yield "score", body

    with Client(router.url, max_concurrency=3) as c:
        seen = []
        for i, result in c.stream_requests(bodies(), progress=False, window=6):
            # never more than the window started ahead of what was yielded
            assert len(taken) <= i + 6
            seen.append(i)
            assert result.scores
        assert seen == list(range(40)) and len(taken) == 40
        # leaving early cancels the rest and reads no more of the input
        taken.clear()
        for i, _ in c.stream_requests(bodies(), progress=False, window=6):
            break
        assert len(taken) == 6
        bad = [("score", {"query": "x", "items": [], "label_token_ids": [1]}), *bodies()]
        first, second = [r for _, r in itertools.islice(c.stream_requests(bad, progress=False), 2)]
        assert isinstance(first, MoepError) and first.status == 400 and second.scores


def test_score_cli_resumes_an_interrupted_job(router, tmp_path):
    src = tmp_path / "requests.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in _score_lines(12)) + "\n")
    out = tmp_path / "results.jsonl"
    assert _score_cli(src, out, router.url).returncode == 0
    full = out.read_text().splitlines()
    # an earlier run that stopped after 5 results, in the middle of writing the 6th
    out.write_text("\n".join(full[:5]) + "\n" + full[5][:17])
    res = _score_cli(src, out, router.url)
    assert res.returncode == 1 and "already holds results: `--resume`" in res.stderr
    res = _score_cli(src, out, router.url, "--resume")
    assert res.returncode == 0, res.stderr
    assert "12 ok, 0 failed (5 kept from an earlier run, 7 sent now)" in res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 13)) and all("result" in r for r in rows)
    assert out.read_text().splitlines()[:5] == full[:5]  # kept as they were
    # nothing left to do: the same summary, nothing sent
    res = _score_cli(src, out, router.url, "--resume")
    assert res.returncode == 0 and "(12 kept from an earlier run, 0 sent now)" in res.stderr
    # another file's results are not continued
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps(x) for x in _score_lines(3)) + "\n")
    res = _score_cli(other, out, router.url, "--resume")
    assert res.returncode == 1 and "not this file's results" in res.stderr
    assert _score_cli(other, out, router.url, "--overwrite").returncode == 0
    assert len(out.read_text().splitlines()) == 3


def test_score_cli_resumes_an_openai_batch_by_custom_id(router, tmp_path):
    src = tmp_path / "batch.jsonl"
    lines = [{"custom_id": f"id-{i}", "method": "POST", "url": "/v1/score", "body": body}
             for i, body in enumerate(_score_lines(6))]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "batch_out.jsonl"
    assert _score_cli(src, out, router.url).returncode == 0
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n")
    res = _score_cli(src, out, router.url, "--resume")
    assert res.returncode == 0 and "6 ok, 0 failed (2 kept" in res.stderr, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["custom_id"]) for r in rows] == [(f"batch_req_{i + 1}", f"id-{i}")
                                                         for i in range(6)]
    lines.insert(0, lines.pop(1))  # the same requests in another order: not this job
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out.write_text("\n".join(full[:2]) + "\n")
    res = _score_cli(src, out, router.url, "--resume")
    assert res.returncode == 1 and "not this file's results" in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_score_cli_stopped_by_a_signal_keeps_what_it_wrote(router, tmp_path, sig):
    src = tmp_path / "requests.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in _score_lines(3000, "long ")) + "\n")
    out = tmp_path / "results.jsonl"
    # SIGINT as a terminal sends it (a shell running the tests in the background ignores it,
    # and so would its children)
    proc = subprocess.Popen([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src),
                             "--url", router.url, "--out", str(out), "--no-progress",
                             "--concurrency", "4"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
        time.sleep(0.05)  # the first results reach the file within a second of arriving
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "interrupted: " in err and "--resume" in err, err
    written = int(err.split("interrupted: ")[1].split(" of ")[0])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert 0 < written == len(rows) < 3000
    assert [r["line"] for r in rows] == list(range(1, written + 1))
    res = _score_cli(src, out, router.url, "--resume")
    assert res.returncode == 0 and f"3000 ok, 0 failed ({written} kept" in res.stderr, res.stderr


def test_score_cli_rides_out_a_router_restart(tiny_model, workers, log_dir, tmp_path):
    port = free_port()
    specs = [worker_spec(w) for w in workers]
    first = RouterProcess(tiny_model, specs, log_dir / "router-restart-a.log", port=port)
    src = tmp_path / "requests.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in _score_lines(400, "restart ")) + "\n")
    out = tmp_path / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src),
                             "--url", first.url, "--out", str(out), "--no-progress",
                             "--concurrency", "4"], stderr=subprocess.PIPE, text=True)
    second = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
            time.sleep(0.1)
        first.proc.kill()  # requests in flight lose their connection; new ones are refused
        first.proc.wait()
        time.sleep(1.0)
        second = RouterProcess(tiny_model, specs, log_dir / "router-restart-b.log", port=port)
        _, err = proc.communicate(timeout=300)
        served_after = second.get("/metrics")[1]
    finally:
        proc.kill()
        if second:
            second.stop()
    assert proc.returncode == 0 and "400 ok, 0 failed" in err, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 401))
    assert 'moep_router_requests_total{endpoint="/v1/score",status="200"}' in served_after


def test_score_cli_writes_an_error_row_where_no_router_answers(tmp_path):
    src = tmp_path / "requests.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in _score_lines(2)) + "\n")
    out = tmp_path / "results.jsonl"
    res = _score_cli(src, out, f"http://127.0.0.1:{free_port()}", "--max-retries", "1")
    assert res.returncode == 1 and "0 ok, 2 failed" in res.stderr, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["error"]["status"] for r in rows] == [0, 0]
    assert "ClientConnectorError" in rows[0]["error"]["message"]


def test_zmq_fast_path_rides_out_a_router_restart(tiny_model, workers, log_dir):
    """Requests in flight when the router goes away are sent again once a router is back on
    the same ports, instead of waiting for their timeout."""
    from moep_router.tokenize import RouterTokenizer

    tok = RouterTokenizer(tiny_model)
    bodies = [{"query": tok.encode(f"{i} {DOC}"), "items": [tok.encode(" Answer:")],
               "label_token_ids": [661]} for i in range(300)]
    port, zmq_port = free_port(), free_port()
    specs = [worker_spec(w) for w in workers]

    def start(name):
        return RouterProcess(tiny_model, specs, log_dir / f"router-zmq-{name}.log",
                             "--zmq-port", str(zmq_port), port=port)

    routers = [start("a")]

    async def run():
        async with AsyncClient(routers[0].url, zmq_url=f"tcp://127.0.0.1:{zmq_port}",
                               max_concurrency=4, max_retries=8, timeout_s=120) as client:
            answered = 0
            t0 = time.monotonic()
            async for i, r in client.stream_requests((("score", b) for b in bodies),
                                                     progress=False):
                assert not isinstance(r, BaseException), r
                answered += 1
                if i == 20:  # mid-job: the router dies and another takes its ports
                    routers[0].proc.kill()
                    routers[0].proc.wait()
                    await asyncio.to_thread(lambda: routers.append(start("b")))
            return answered, time.monotonic() - t0

    try:
        answered, wall = asyncio.run(run())
    finally:
        for r in routers:
            r.stop()
    assert answered == 300 and wall < 90  # not one request waited out its 120-s timeout
