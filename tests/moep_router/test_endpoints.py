"""Request parsing and validation of every endpoint (pure: the tiny model's tokenizer)."""

import pytest

from moep_router.endpoints import (
    RERANK_V2_MAX_TOKENS_PER_DOC, EndpointContext, parse_classify, parse_generate, parse_rerank,
    parse_rerank_v2, parse_score,
)
from moep_router.jobs import BadRequest, label_scores
from moep_router.model_spec import ModelSpec
from moep_router.tokenize import RouterTokenizer


@pytest.fixture(scope="module")
def ctx(tiny_model):
    return EndpointContext(RouterTokenizer(tiny_model), ModelSpec.from_model_dir(tiny_model),
                           "tiny", "Q: {query} D: {document} Relevant? Answer:")


def test_score_prompts_share_the_query_prefix(ctx):
    job = parse_score({"query": "The hotel was good.", "items": [" yes", " no"],
                       "label_token_ids": [661, 362]}, ctx)
    q = ctx.tok.encode("The hotel was good.")
    assert job.prompts[0][: len(q)] == tuple(q) and job.prefix_len >= len(q)
    assert job.generate_body()["token_ids_logprob"] == [661, 362]
    assert job.generate_body()["sampling_params"] == {"max_new_tokens": 0}


def test_prompts_up_to_what_sglang_takes_pass_and_longer_get_400(ctx):
    longest = ctx.spec.max_prompt_tokens  # 2,041: SGLang refuses 2,042 and more at 2,048
    assert parse_score({"query": [5] * (longest - 1), "items": [[7]],
                        "label_token_ids": [1]}, ctx).prompts[0].__len__() == longest
    with pytest.raises(BadRequest, match=f"prompt 0 has {longest + 1} tokens"):
        parse_score({"query": [5] * longest, "items": [[7]], "label_token_ids": [1]}, ctx)


def test_score_item_first(ctx):
    job = parse_score({"query": [5, 6], "items": [[7], [8]], "label_token_ids": [1],
                       "item_first": True}, ctx)
    assert job.prompts == ((7, 5, 6), (8, 5, 6)) and job.prefix_len == 0


BAD = {
    "missing items": ({"query": "x", "label_token_ids": [1]}, "`items` is required"),
    "empty items": ({"query": "x", "items": [], "label_token_ids": [1]}, "non-empty"),
    "empty item": ({"query": "x", "items": [""], "label_token_ids": [1]}, "empty item"),
    "missing labels": ({"query": "x", "items": ["y"]}, "label_token_ids"),
    "labels out of vocab": ({"query": "x", "items": ["y"], "label_token_ids": [10**6]},
                            "outside the vocabulary"),
    "negative label": ({"query": "x", "items": ["y"], "label_token_ids": [-1]}, "outside"),
    "label as string": ({"query": "x", "items": ["y"], "label_token_ids": "yes"}, "label_token"),
    "unknown field": ({"query": "x", "items": ["y"], "label_token_ids": [1], "temp": 1},
                      "unknown field"),
    "softmax not bool": ({"query": "x", "items": ["y"], "label_token_ids": [1],
                          "apply_softmax": "yes"}, "true or false"),
    "query wrong type": ({"query": 5, "items": ["y"], "label_token_ids": [1]}, "`query`"),
    "token id out of range": ({"query": [10**7], "items": [[1]], "label_token_ids": [1]},
                              "outside"),
    "too long": ({"query": "word " * 5000, "items": ["y"], "label_token_ids": [1]},
                 "takes at most 2041 \\(context 2048\\)"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_score_requests(ctx, name):
    body, message = BAD[name]
    with pytest.raises(BadRequest, match=message) as info:
        parse_score(body, ctx)
    assert info.value.status == 400


def test_unknown_model_is_404(ctx):
    with pytest.raises(BadRequest, match="unknown model") as info:
        parse_score({"query": "x", "items": ["y"], "label_token_ids": [1], "model": "gpt"}, ctx)
    assert info.value.status == 404


def test_classify_labels_must_be_single_tokens(ctx):
    job = parse_classify({"input": ["a", "b"], "labels": ["positive", "negative"]}, ctx)
    assert len(job.prompts) == 2 and len(job.label_token_ids) == 2
    with pytest.raises(BadRequest, match="not a single token"):
        parse_classify({"input": "a", "labels": ["extraordinarily-unusual"]}, ctx)


def test_multi_label_classify_makes_sibling_prompts_with_a_shared_prefix(ctx):
    job = parse_classify({"input": "The hotel was good.", "labels": ["yes", "A", "B"],
                          "multi_label": True}, ctx)
    assert len(job.prompts) == 3
    assert job.prefix_len >= len(ctx.tok.encode("The hotel was good."))


def test_rerank_and_generate(ctx):
    job = parse_rerank({"query": "hotel", "documents": ["a", {"text": "b"}], "top_n": 1}, ctx)
    assert len(job.prompts) == 2 and job.extra["top_n"] == 1
    with pytest.raises(BadRequest, match="top_n"):
        parse_rerank({"query": "hotel", "documents": ["a"], "top_n": 0}, ctx)
    gen = parse_generate({"text": ["a", "b"]}, ctx)
    assert gen.extra["batched"] and gen.generate_body()["sampling_params"]["max_new_tokens"] == 0
    with pytest.raises(BadRequest, match="exactly one"):
        parse_generate({"text": "a", "input_ids": [1]}, ctx)


def _document_of(ctx, job, i):
    """The document text inside prompt i (the template's text between D: and Relevant?)."""
    text = ctx.tok.decode(list(job.prompts[i]))
    return text[text.index(" D: ") + 4: text.rindex(" Relevant? Answer:")]


def test_rerank_max_tokens_per_doc_cuts_each_document_to_its_first_tokens(ctx):
    long = "The hotel by the river was quiet and clean. " * 40
    job = parse_rerank({"query": "hotel", "documents": [long, "short"],
                        "max_tokens_per_doc": 12}, ctx)
    cut = _document_of(ctx, job, 0)
    assert long.startswith(cut) and len(cut) < len(long)
    assert len(ctx.tok.encode_continuation([cut])[0]) == 12  # ASCII: no character in pieces
    assert _document_of(ctx, job, 1) == "short"
    assert job.extra["documents"] == [long, "short"]  # returned as given
    whole = parse_rerank({"query": "hotel", "documents": [long]}, ctx)  # v1: no default cut
    assert _document_of(ctx, whole, 0) == long and whole.extra["api_version"] == 1


def test_rerank_v2_cuts_long_documents_to_fit_and_takes_only_its_fields(ctx):
    text = "word " * (RERANK_V2_MAX_TOKENS_PER_DOC + 100)  # beyond the tiny model's 2,048
    job = parse_rerank_v2({"model": "tiny", "query": "q", "documents": [text, "b"], "top_n": 1,
                           "priority": 0}, ctx)
    cut = _document_of(ctx, job, 0)
    assert text.startswith(cut) and len(cut) < len(text)
    assert ctx.spec.max_prompt_tokens == 2048 - 7  # SGLang's max_req_input_len, less one
    assert max(map(len, job.prompts)) <= ctx.spec.max_prompt_tokens
    assert len(job.prompts[0]) >= ctx.spec.max_prompt_tokens - 2  # the room, less a merge or two
    assert job.extra["api_version"] == 2 and job.extra["top_n"] == 1
    given = parse_rerank_v2({"query": "q", "documents": [text], "max_tokens_per_doc": 9}, ctx)
    assert len(ctx.tok.encode_continuation([_document_of(ctx, given, 0)])[0]) == 9
    with pytest.raises(BadRequest, match="at most 2041 \\(context 2048\\)"):  # as asked
        parse_rerank_v2({"query": "q", "documents": [text], "max_tokens_per_doc": 4096}, ctx)
    with pytest.raises(BadRequest, match="no room for a document"):
        parse_rerank_v2({"query": "q " * 3000, "documents": ["a"]}, ctx)
    with pytest.raises(BadRequest, match="unknown field.*return_documents"):
        parse_rerank_v2({"query": "q", "documents": ["a"], "return_documents": True}, ctx)
    with pytest.raises(BadRequest, match="`priority` other than 0"):
        parse_rerank_v2({"query": "q", "documents": ["a"], "priority": 3}, ctx)


@pytest.mark.parametrize("field,value,message", [
    ("rank_fields", ["title"], "`rank_fields` is not supported"),
    ("max_chunks_per_doc", 10, "not split into chunks"),
    ("max_tokens_per_doc", 0, "positive integer"),
    ("max_tokens_per_doc", True, "positive integer"),
])
@pytest.mark.parametrize("parse", [parse_rerank, parse_rerank_v2])
def test_rerank_fields_we_do_not_serve_are_named_in_the_400(ctx, parse, field, value, message):
    with pytest.raises(BadRequest, match=message):
        parse({"query": "q", "documents": ["a"], field: value}, ctx)


@pytest.mark.parametrize("text", ["héllo wörld " * 30, "日本語のテキスト。" * 30,
                                  "The hotel  by the river,\n\n was quiet. " * 20])
def test_truncate_keeps_at_most_the_first_tokens(ctx, text):
    ids = ctx.tok.encode_continuation([text])[0]
    for n in range(1, 60):
        cut = ctx.tok.truncate([text], n)[0]
        got = ctx.tok.encode_continuation([cut])[0]
        assert text.startswith(cut) and len(got) <= n and got == ids[: len(got)]
        assert len(got) >= n - 3  # only a character's pieces are left out
    assert ctx.tok.truncate(["short", text, ""], 7)[::2] == ["short", ""]
    assert ctx.tok.truncate([text], 10**6) == [text]


def test_label_scores_match_sglang_conversion():
    meta = {"output_token_ids_logprobs": [[[-0.5, 7, None], [-2.0, 9, None]]]}
    raw = label_scores(meta, (7, 9, 11), apply_softmax=False)
    assert raw[0] == pytest.approx(0.6065306597) and raw[2] == 0.0
    soft = label_scores(meta, (7, 9), apply_softmax=True)
    assert soft[0] == pytest.approx(1 / (1 + 2.718281828 ** -1.5)) and sum(soft) == pytest.approx(1)


@pytest.mark.parametrize("meta", [{}, {"output_token_ids_logprobs": None},
                                  {"output_token_ids_logprobs": []}])
def test_a_reply_without_label_logprobs_is_an_error_not_zero_scores(meta):
    with pytest.raises(RuntimeError, match="carries no label logprobs"):
        label_scores(meta, (7, 9), apply_softmax=True)


TOO_MANY = {
    "score": (parse_score, {"query": "x", "items": ["y"] * 5, "label_token_ids": [1]}, "`items`"),
    "classify": (parse_classify, {"input": ["a"] * 5, "labels": ["yes", "no"]}, "`input`"),
    "multi_label": (parse_classify, {"input": "a", "labels": ["yes"] * 5, "multi_label": True},
                    "`labels`"),
    "rerank": (parse_rerank, {"query": "q", "documents": ["d"] * 5}, "`documents`"),
    "rerank_v2": (parse_rerank_v2, {"query": "q", "documents": ["d"] * 5}, "`documents`"),
    "generate": (parse_generate, {"input_ids": [[1]] * 5}, "batch"),
}


@pytest.mark.parametrize("name", sorted(TOO_MANY))
def test_too_many_prompts_is_413_naming_the_flag(ctx, name):
    parse, body, what = TOO_MANY[name]
    small = EndpointContext(ctx.tok, ctx.spec, ctx.model_name, ctx.rerank_template, max_items=4)
    with pytest.raises(BadRequest, match="--max-items-per-request") as info:
        parse(body, small)
    assert info.value.status == 413 and what in str(info.value) and "5 entries" in str(info.value)
    parse(body, ctx)  # within the default bound it parses


def test_text_chars_counts_what_parsing_tokenizes():
    from moep_router.endpoints import text_chars

    assert text_chars({"query": "q" * 10, "items": [[1, 2]], "label_token_ids": [1]}) == 10
    assert text_chars({"query": [1], "items": ["ab", "c"]}) == 3
    assert text_chars({"query": "q", "documents": [{"text": "dd"}]}) == 3
    assert text_chars({"query": [1, 2], "items": [[3], [4]], "model": "m" * 50}) == 0
    assert text_chars({"input_ids": [[1, 2]], "sampling_params": {"max_new_tokens": 0}}) == 0
    assert text_chars([1, 2]) == 0
