"""The wire structs of moep_router/messages.py: what the router encodes, the SDK decodes."""

import uuid

import msgspec
import orjson
import pytest

from moep_router import messages
from moep_router.dispatcher import DispatchResult
from moep_router.endpoints import shape_response
from moep_router.jobs import Job
from moep_router.messages import ErrorResponse, PromptTokensDetails, Reply, Usage
from moep_sglang.client.types import (
    Classification, ClassifyResult, GenerateResult, RerankHit, RerankResult, error_message,
    parse_result,
)

USAGE = Usage(prompt_tokens=6, total_tokens=6, cached_tokens=2,
              prompt_tokens_details=PromptTokensDetails(2), flops=1200)
USAGE_JSON = {"prompt_tokens": 6, "total_tokens": 6, "cached_tokens": 2,
              "prompt_tokens_details": {"cached_tokens": 2}, "flops": 1200}


def _result(kind: str, logprobs: list[tuple], usage: Usage = USAGE, **extra) -> DispatchResult:
    """A worker reply per prompt: the logprobs of label tokens 7 and 9 (None: not returned)."""
    raw = [{"meta_info": {"output_token_ids_logprobs": [
        [[lp, tok, None] for lp, tok in zip(lps, (7, 9)) if lp is not None]]}} for lps in logprobs]
    job = Job(kind, ((1, 2, 3),) * len(raw), 3, (7, 9), True, {"model": "tiny", **extra}, {})
    return DispatchResult(job, raw, usage, "w0")


# Each response as the endpoints wrote it before the structs (orjson of hand-made dicts).
CASES = {
    "score": (
        _result("score", [(0.0, 0.0), (0.0, None)]),
        {"scores": [[0.5, 0.5], [1.0, 0.0]], "model": "tiny", "usage": USAGE_JSON,
         "object": "scoring"}),
    "score_nothing_cached": (  # zero figures are sent too
        _result("score", [(0.0, None)], Usage(prompt_tokens=3, total_tokens=3, cached_tokens=0,
                                              prompt_tokens_details=PromptTokensDetails(0),
                                              flops=0)),
        {"scores": [[1.0, 0.0]], "model": "tiny", "usage": {
            "prompt_tokens": 3, "total_tokens": 3, "cached_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": 0}, "flops": 0}, "object": "scoring"}),
    "classify": (
        _result("classify", [(0.0, None), (None, 0.0)], labels=["pos", "neg"], multi_label=False),
        {"object": "list", "model": "tiny", "data": [
            {"index": 0, "label": "pos", "probs": [1.0, 0.0], "num_classes": 2},
            {"index": 1, "label": "neg", "probs": [0.0, 1.0], "num_classes": 2}],
         "usage": USAGE_JSON}),
    "classify_multi_label": (
        _result("classify", [(0.0, None), (None, 0.0)], labels=["a", "b"], multi_label=True),
        {"object": "list", "model": "tiny", "data": [
            {"index": 0, "labels": ["a"], "probs": [1.0, 0.0], "num_classes": 2}],
         "usage": USAGE_JSON}),
    # Cohere's `id` (a fresh UUID: None here stands for it) and `meta` since 2026-12-08
    "rerank": (
        _result("rerank", [(0.0, 0.0), (0.0, None)], documents=["d0", "d1"], top_n=2,
                return_documents=False, api_version=1),
        {"id": None, "model": "tiny", "results": [{"index": 1, "relevance_score": 1.0},
                                                  {"index": 0, "relevance_score": 0.5}],
         "usage": USAGE_JSON, "meta": {"api_version": {"version": "1"},
                                       "tokens": {"input_tokens": 6, "output_tokens": 0},
                                       "cached_tokens": 2}}),
    "rerank_documents": (
        _result("rerank", [(0.0, 0.0), (0.0, None)], documents=["d0", "d1"], top_n=1,
                return_documents=True, api_version=2),
        {"id": None, "model": "tiny", "results": [{"index": 1, "relevance_score": 1.0,
                                                   "document": {"text": "d1"}}],
         "usage": USAGE_JSON, "meta": {"api_version": {"version": "2"},
                                       "tokens": {"input_tokens": 6, "output_tokens": 0},
                                       "cached_tokens": 2}}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_responses_keep_the_json_the_endpoints_sent(name):
    result, expected = CASES[name]
    wire = messages.encode(shape_response(result))
    if "id" in expected:
        expected = {**expected, "id": str(uuid.UUID(orjson.loads(wire)["id"]))}
    assert orjson.loads(wire) == expected
    assert wire == orjson.dumps(expected)  # the same fields, in the same order


@pytest.mark.parametrize("name", sorted(CASES))
def test_router_shapes_decode_back_to_equal_structs(name):
    result, _ = CASES[name]
    shaped = shape_response(result)
    assert messages.decode_response(result.job.kind, messages.encode(shaped)) == shaped


def test_sdk_decodes_what_the_router_encodes():
    wire = {name: messages.encode(shape_response(r)) for name, (r, _) in CASES.items()}
    score = parse_result("score", wire["score"])
    assert score.scores == [[0.5, 0.5], [1.0, 0.0]] and score.usage == USAGE
    assert score.usage.cached_tokens == 2 and score.usage.flops == 1200
    assert parse_result("classify", wire["classify"]) == ClassifyResult(
        [Classification(0, "pos", ["pos"], [1.0, 0.0]),
         Classification(1, "neg", ["neg"], [0.0, 1.0])], USAGE)
    multi = parse_result("classify", wire["classify_multi_label"]).data[0]
    assert (multi.label, multi.labels, multi.probs) == (None, ["a"], [1.0, 0.0])
    assert parse_result("rerank", wire["rerank"]) == RerankResult(
        [RerankHit(1, 1.0, None), RerankHit(0, 0.5, None)], USAGE)
    assert parse_result("rerank", wire["rerank_documents"]).results == [RerankHit(1, 1.0, "d1")]


def test_generate_passes_sglangs_reply_through():
    raw = {"text": "", "meta_info": {"prompt_tokens": 3, "cached_tokens": 0, "flops": 9}}
    result = _result("generate", [()], batched=False)
    result.raw[0] = raw
    assert shape_response(result) is raw
    assert parse_result("generate", messages.encode(raw)) == GenerateResult(raw)


def test_fast_path_reply_round_trip():
    shaped = shape_response(CASES["score"][0])
    frame = messages.encode(Reply(200, msgspec.Raw(messages.encode(shaped)), 7))
    assert orjson.loads(frame) == {"status": 200, "body": CASES["score"][1], "request_id": 7}
    reply = messages.decode_reply(frame)
    assert (reply.status, reply.request_id) == (200, 7)
    assert parse_result("score", bytes(reply.body)) == shaped


def test_error_replies():
    error = ErrorResponse(message="`items` is required", type="invalid_request_error", code=400)
    wire = messages.encode(error)
    assert orjson.loads(wire) == {"object": "error", "message": "`items` is required",
                                  "type": "invalid_request_error", "code": 400}
    assert error_message(wire) == "`items` is required"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"  # FastAPI's (a bare worker)
    assert error_message(b"413: Request Entity Too Large") == "413: Request Entity Too Large"
    assert error_message(b"") == "(empty body)"


def test_a_bare_sglang_score_reply_decodes():
    """SGLang's own /v1/score, without the moep plugin: more fields, fewer usage figures."""
    raw = orjson.dumps({"scores": [[0.25]], "pooled_hidden_states": None, "model": "default",
                        "usage": {"prompt_tokens": 5, "total_tokens": 5, "completion_tokens": 0,
                                  "prompt_tokens_details": None, "reasoning_tokens": 0},
                        "object": "scoring"})
    score = parse_result("score", raw)
    assert score.scores == [[0.25]] and score.usage == Usage(prompt_tokens=5, total_tokens=5)


def test_worker_report_tolerates_fields_it_does_not_know():
    # What moep_sglang/plugin/asyncep_hooks.report_state writes, and a figure added later.
    moep = {"asyncep": None, "batching": {"threshold_flops": 2.5e9, "max_wait_ms": 50.0,
                                          "batches": 4, "recent_batches": []},
            "memory": {}, "threshold_flops": 2.5e9, "a_figure_added_later": {"x": [1]}}
    info = orjson.dumps({"version": "0.5", "max_total_num_tokens": 4096, "internal_states": [
        {"last_gen_throughput": 0.0, "moep": moep}, {"last_gen_throughput": 0.0},
        {"moep": {"threshold_flops": None}}]})
    reports = messages.decode_worker_reports(info)
    assert [r.threshold_flops for r in reports] == [2.5e9, None]
    assert reports[0].batching["batches"] == 4 and reports[0].asyncep is None
    assert messages.decode_worker_reports(b'{"version": "0.5"}') == []


MALFORMED = {
    "wrong type": ("score", b'{"scores": "high", "model": "tiny"}',
                   r"Expected `array`, got `str` - at `\$.scores`"),
    "missing field": ("rerank", b'{"model": "tiny", "usage": {}}',
                      "Object missing required field `results`"),
    "nested wrong type": ("classify", b'{"model": "tiny", "data": [{"index": "0", "probs": [], '
                                      b'"num_classes": 1}]}',
                          r"Expected `int`, got `str` - at `\$.data\[0\].index`"),
    "not JSON": ("score", b'{"scores": [[0.5]', "truncated|malformed"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_reply_fails_decoding_naming_what_is_wrong(name):
    kind, raw, message = MALFORMED[name]
    with pytest.raises(msgspec.DecodeError, match=message):
        parse_result(kind, raw)


def test_a_malformed_envelope_or_report_fails_decoding():
    with pytest.raises(msgspec.ValidationError, match="missing required field `status`"):
        messages.decode_reply(b'{"body": {}, "request_id": 1}')
    bad_t = b'{"internal_states": [{"moep": {"threshold_flops": "high"}}]}'
    with pytest.raises(msgspec.ValidationError,
                       match=r"at `\$.internal_states\[0\].moep.threshold_flops`"):
        messages.decode_worker_reports(bad_t)
