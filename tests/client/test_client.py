"""The SDK and `moep-sglang score` against the router and two real CPU workers."""

import asyncio
import json
import subprocess
import sys

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


def test_score_cli_from_jsonl(router, tmp_path):
    src = tmp_path / "requests.jsonl"
    lines = [{"query": DOC, "items": [f" Question {i}? Answer:"], "label_token_ids": [661, 362]}
             for i in range(12)]
    lines.append({"query": "x", "items": [], "label_token_ids": [1]})  # a bad one
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "results.jsonl"
    res = subprocess.run([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src),
                          "--url", router.url, "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 1  # one request failed, and the exit code says so
    assert "12 ok, 1 failed" in res.stderr and "cached" in res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 14))
    assert all("result" in r for r in rows[:12]) and rows[12]["error"]["status"] == 400


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
    res = subprocess.run([sys.executable, "-m", "moep_sglang.cli", "score", "--file", str(src),
                          "--url", router.url, "--out", str(out), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "4 ok, 1 failed" in res.stderr, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["c0", "c1", "c2", "s", "bad"]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows[:4])
    chat_body = rows[0]["response"]["body"]  # the router's JSON as sent
    assert chat_body["object"] == "chat.completion" and chat_body["usage"]["flops"] > 0
    assert rows[3]["response"]["body"]["object"] == "scoring"
    assert rows[4]["response"]["status_code"] == 400
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
