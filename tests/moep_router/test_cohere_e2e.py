"""Cohere's own Python SDK (v1 and v2 clients) against the router in front of a real tiny CPU
worker: the ranking and relevance scores equal P(yes) of the rerank prompt as the worker's
native /generate computes it, long documents are cut as Cohere's v2 cuts them, and what the
router does not serve comes back as Cohere's BadRequestError with the router's reason."""

import math

import cohere
import pytest

from moep_router.config import DEFAULT_RERANK_TEMPLATE
from moep_router.tokenize import RouterTokenizer
from tests.helpers import post

YES, NO = 661, 362  # " yes", " no": single tokens of the generated tokenizer
QUERY = "Which hotel was clean?"
DOCS = ["The hotel was clean and quiet.", "The river ran past the mill.",
        "Every room of the hotel was spotless.", "Bread was sold at dawn."]


@pytest.fixture(scope="module")
def v1(router):
    return cohere.Client(base_url=router.url, api_key="unused", timeout=60)


@pytest.fixture(scope="module")
def v2(router):
    return cohere.ClientV2(base_url=router.url, api_key="unused", timeout=60)


def _p_yes(worker, document: str) -> float:
    """P(yes) renormalised over yes/no after the rerank prompt, from the worker itself."""
    status, reply = post(f"{worker.config.url}/generate", {
        "text": DEFAULT_RERANK_TEMPLATE.format(query=QUERY, document=document),
        "sampling_params": {"max_new_tokens": 0}, "return_logprob": True,
        "token_ids_logprob": [YES, NO]})
    assert status == 200
    (yes, _, _), (no, _, _) = reply["meta_info"]["output_token_ids_logprobs"][0]
    return 1 / (1 + math.exp(no - yes))


def test_v1_rerank_ranks_by_the_workers_p_yes(v1, worker):
    got = v1.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    expected = {i: _p_yes(worker, d) for i, d in enumerate(DOCS)}
    best = sorted(expected, key=lambda i: -expected[i])[:3]
    assert [r.index for r in got.results] == best
    for r in got.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-4)
        assert r.document.text == DOCS[r.index]
    assert got.id and got.meta.api_version.version == "1"
    assert got.meta.tokens.input_tokens > 0 and got.meta.tokens.output_tokens == 0


def test_v1_documents_as_objects_and_without_return_documents(v1):
    got = v1.rerank(query=QUERY, documents=[{"text": d} for d in DOCS])
    assert sorted(r.index for r in got.results) == [0, 1, 2, 3]
    assert all(r.document is None for r in got.results)


def test_v2_rerank_equals_v1_and_cuts_long_documents(v1, v2, worker, tiny_model):
    got = v2.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=2)
    same = v1.rerank(model="tiny", query=QUERY, documents=DOCS, top_n=2)
    assert [(r.index, round(r.relevance_score, 5)) for r in got.results] == \
        [(r.index, round(r.relevance_score, 5)) for r in same.results]
    assert got.meta.api_version.version == "2"
    # Cohere's v2 cuts each document to max_tokens_per_doc (4,096 by default; here the tiny
    # model's 2,048-token context leaves less): a long document is ranked, not refused
    long = "The hotel was clean and quiet. " * 800
    ranked = v2.rerank(model="tiny", query=QUERY, documents=[long, DOCS[1]])
    assert sorted(r.index for r in ranked.results) == [0, 1]
    assert 1990 < ranked.meta.tokens.input_tokens < 2048 + 100  # the long prompt + a short one
    # max_tokens_per_doc=7: scored as the document's first 7 tokens
    cut = v2.rerank(model="tiny", query=QUERY, documents=[long], max_tokens_per_doc=7)
    first7 = RouterTokenizer(tiny_model).truncate([long], 7)[0]
    assert len(first7) < 40 and long.startswith(first7)
    assert cut.results[0].relevance_score == pytest.approx(_p_yes(worker, first7), abs=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    ({"rank_fields": ["title"]}, "`rank_fields` is not supported"),
    ({"max_chunks_per_doc": 4}, "not split into chunks"),
    ({"model": "rerank-v3.5"}, "unknown model 'rerank-v3.5'"),
])
def test_v1_fields_the_router_does_not_serve_are_cohere_errors_with_the_reason(v1, kwargs,
                                                                              message):
    kwargs.setdefault("model", "tiny")
    with pytest.raises(cohere.core.ApiError) as info:
        v1.rerank(query=QUERY, documents=DOCS, **kwargs)
    assert info.value.status_code in (400, 404) and message in info.value.body["message"]


def test_v2_priority_is_refused_unless_default(v2):
    assert v2.rerank(model="tiny", query=QUERY, documents=DOCS[:1], priority=0).results
    with pytest.raises(cohere.errors.BadRequestError) as info:
        v2.rerank(model="tiny", query=QUERY, documents=DOCS[:1], priority=2)
    assert "`priority` other than 0" in info.value.body["message"]
