"""Parse each public endpoint's body into a Job, and shape the worker's reply into its response
(the structs of messages.py).

| endpoint | request | response |
|---|---|---|
| /v1/score | {query, items, label_token_ids, apply_softmax=false, item_first=false} | ScoreResponse {scores, model, usage, object: "scoring"} (SGLang's) |
| /v1/classify | {input, labels, apply_softmax=true, multi_label=false} | ClassifyResponse {data: [{index, label or labels, probs, num_classes}]} |
| /v1/rerank | {query, documents, top_n, return_documents=false, max_tokens_per_doc} | RerankResponse {id, results: [{index, relevance_score, document?}], usage, meta} (Cohere v1, Jina) |
| /v2/rerank | {model, query, documents, top_n, max_tokens_per_doc=4096, priority=0} | RerankResponse {id, results: [{index, relevance_score}], usage, meta} (Cohere v2) |
| /generate | SGLang's body (text or input_ids) | SGLang's reply, + meta_info.flops |
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from moep_router.chat_template import ChatTemplate
from moep_router.jobs import BadRequest, Job, label_scores
from moep_router.messages import (
    ApiVersion, Classification, ClassifyResponse, MetaTokens, RerankDocument, RerankHit,
    RerankMeta, RerankResponse, Response, ScoreResponse, Usage,
)
from moep_router.model_spec import ModelSpec
from moep_router.tokenize import RouterTokenizer

YES_NO = (" yes", " no")


@dataclass(frozen=True)
class EndpointContext:
    tok: RouterTokenizer  # the model's tokenizer
    spec: ModelSpec  # for the context limit
    model_name: str  # the name clients may send as `model`
    rerank_template: str  # prompt of /v1/rerank and /v2/rerank
    max_items: int = 4096  # prompts one request may carry (--max-items-per-request)
    chat: ChatTemplate | None = None  # the model's chat template (/v1/chat/completions)
    chat_missing: str = "no chat template"  # why there is none, when there is none
    created: int = 0  # when the router started, unix seconds (/v1/models)


# Parsing ------------------------------------------------------------------------------------
def parse_score(body: dict, ctx: EndpointContext) -> Job:
    check_fields(body, {"query", "items", "label_token_ids", "apply_softmax", "item_first",
                        "model"}, ctx)
    query = text_or_ids(body.get("query", ""), "query", ctx, special=True)
    items = body.get("items")
    if items is None:
        raise BadRequest("`items` is required: a string, a list of strings or of token-id lists")
    if isinstance(items, str) or (isinstance(items, list) and items and is_ids(items)):
        items = [items]
    if not isinstance(items, list) or not items:
        raise BadRequest("`items` must be a non-empty list of strings or token-id lists")
    check_count(len(items), "`items`", ctx)
    item_ids = [text_or_ids(it, f"items[{i}]", ctx, special=False) for i, it in enumerate(items)]
    if any(not ids for ids in item_ids):
        raise BadRequest("`items` contains an empty item")
    item_first = bool_field(body, "item_first", False)
    prompts = [i + query if item_first else query + i for i in item_ids]
    labels = _label_ids(body.get("label_token_ids"), ctx)
    return make_job("score", prompts, labels, bool_field(body, "apply_softmax", False), ctx)


def parse_classify(body: dict, ctx: EndpointContext) -> Job:
    check_fields(body, {"input", "labels", "apply_softmax", "multi_label", "model"}, ctx)
    inputs = body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and is_ids(inputs)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("`input` is required: a string, a list of strings or of token-id lists")
    check_count(len(inputs), "`input`", ctx)
    labels = body.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(l, str) for l in labels):
        raise BadRequest("`labels` is required: a non-empty list of label strings")
    if body.get("multi_label"):
        check_count(len(labels), "`labels` (one sibling prompt each with multi_label)", ctx)
    ids = [text_or_ids(x, f"input[{i}]", ctx, special=True) for i, x in enumerate(inputs)]
    if bool_field(body, "multi_label", False):
        if len(ids) != 1:
            raise BadRequest("`multi_label` classifies one input at a time")
        siblings = ctx.tok.encode_continuation([f" Label: {l}? Answer:" for l in labels])
        prompts = [ids[0] + s for s in siblings]
        return make_job("classify", prompts, _words(YES_NO, ctx), True, ctx,
                        labels=labels, multi_label=True)
    return make_job("classify", ids, _words(labels, ctx), bool_field(body, "apply_softmax", True),
                    ctx, labels=labels, multi_label=False)


# Cohere's rerank fields that this router refuses, with what to do instead.
RERANK_UNSUPPORTED = {
    "rank_fields": "`rank_fields` is not supported: send each document as one string (for "
                   "structured documents, as YAML text) or as an object with a `text` string",
    "max_chunks_per_doc": "`max_chunks_per_doc` is not supported: documents are not split into "
                          "chunks; `max_tokens_per_doc` cuts each one to its first N tokens",
}
RERANK_V2_MAX_TOKENS_PER_DOC = 4096  # Cohere's v2 default


def parse_rerank(body: dict, ctx: EndpointContext) -> Job:
    """/v1/rerank: Cohere's v1 (and Jina's) fields, and `max_tokens_per_doc` from v2."""
    return _rerank_job(body, ctx, 1, {"query", "documents", "top_n", "return_documents",
                                      "model", "max_tokens_per_doc"})


def parse_rerank_v2(body: dict, ctx: EndpointContext) -> Job:
    """/v2/rerank: Cohere's v2. Documents are cut to `max_tokens_per_doc` (by default 4,096, as
    Cohere's, or what the model's context leaves), no `return_documents`, and `priority` only
    at its default, 0."""
    priority = body.get("priority", 0)
    if priority != 0 or isinstance(priority, bool):
        raise BadRequest("`priority` other than 0 is not supported: this router serves "
                         "requests in the order they arrive")
    return _rerank_job(body, ctx, 2, {"query", "documents", "top_n", "model",
                                      "max_tokens_per_doc", "priority"})


def _rerank_job(body: dict, ctx: EndpointContext, version: int, allowed: set[str]) -> Job:
    for field, why in RERANK_UNSUPPORTED.items():
        if field in body:
            raise BadRequest(why)
    check_fields(body, allowed, ctx)
    query, docs = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not query:
        raise BadRequest("`query` is required: a non-empty string")
    if not isinstance(docs, list) or not docs:
        raise BadRequest("`documents` is required: a non-empty list of strings")
    check_count(len(docs), "`documents`", ctx)
    texts = [d.get("text") if isinstance(d, dict) else d for d in docs]
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest("each document must be a string or an object with a `text` string")
    top_n = positive_int(body.get("top_n", len(docs)), "top_n")
    limit = body.get("max_tokens_per_doc")
    if limit is not None:
        positive_int(limit, "max_tokens_per_doc")
    elif version == 2:
        limit = _v2_default_doc_tokens(query, ctx)
    scored = texts if limit is None else ctx.tok.truncate(texts, limit)
    prompts = ctx.tok.encode_batch(
        [ctx.rerank_template.format(query=query, document=t) for t in scored])
    return make_job("rerank", prompts, _words(YES_NO, ctx), True, ctx, documents=texts,
                    top_n=top_n, return_documents=bool_field(body, "return_documents", False),
                    api_version=version)


def _v2_default_doc_tokens(query: str, ctx: EndpointContext) -> int:
    """Cohere's default cut, 4,096 tokens, or less where the model's context leaves less room
    beside the template and the query: a long document is cut, never refused."""
    limit = RERANK_V2_MAX_TOKENS_PER_DOC
    if ctx.spec.max_prompt_tokens:
        room = ctx.spec.max_prompt_tokens - len(ctx.tok.encode(
            ctx.rerank_template.format(query=query, document="")))
        if room < 1:
            raise BadRequest("`query` leaves no room for a document in a prompt of at most "
                             f"{ctx.spec.max_prompt_tokens} tokens")
        limit = min(limit, room)
    return limit


def parse_generate(body: dict, ctx: EndpointContext) -> Job:
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise BadRequest("give exactly one of `text` or `input_ids`")
    batched = isinstance(text, list) or (isinstance(ids, list) and ids and isinstance(ids[0], list))
    values = (text if isinstance(text, list) else [text]) if text is not None else (
        ids if batched else [ids])
    if not values:
        raise BadRequest("`text`/`input_ids` is an empty batch")
    check_count(len(values), "the `text`/`input_ids` batch", ctx)
    prompts = [text_or_ids(v, "input", ctx, special=True) for v in values]
    rest = {k: v for k, v in body.items() if k not in ("text", "input_ids")}
    rest.setdefault("sampling_params", {"max_new_tokens": 0})
    return make_job("generate", prompts, (), False, ctx, worker_body=rest, batched=batched)


def text_chars(body) -> int:
    """Characters of text that parsing `body` tokenizes: strings among its top-level values,
    in lists of them, and in the dicts of such lists (documents `{text}`); the `model` name
    aside. Token-id bodies: 0."""
    if not isinstance(body, dict):
        return 0
    n = 0
    for key, value in body.items():
        if isinstance(value, str):
            n += 0 if key == "model" else len(value)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    n += len(v)
                elif isinstance(v, dict):
                    n += sum(len(x) for x in v.values() if isinstance(x, str))
    return n


# Responses ----------------------------------------------------------------------------------
def shape_response(result) -> Response | dict | list:
    """The endpoint's response for a dispatcher.DispatchResult (its job says which endpoint):
    a struct of messages.py, or SGLang's own reply for /generate."""
    job = result.job
    return _SHAPERS[job.kind](job, result.metas, result.raw, result.usage)


def _score_response(job, metas, raw, usage: Usage) -> ScoreResponse:
    scores = [label_scores(m, job.label_token_ids, job.apply_softmax) for m in metas]
    return ScoreResponse(scores, job.extra["model"], usage)


def _classify_response(job, metas, raw, usage: Usage) -> ClassifyResponse:
    labels = job.extra["labels"]
    probs = [label_scores(m, job.label_token_ids, job.apply_softmax) for m in metas]
    if job.extra["multi_label"]:
        yes = [p[0] for p in probs]  # P(yes) of each sibling, renormalised over yes/no
        data = [Classification(index=0, labels=[l for l, p in zip(labels, yes) if p >= 0.5],
                               probs=yes, num_classes=len(labels))]
    else:
        data = [Classification(index=i, label=labels[max(range(len(p)), key=p.__getitem__)],
                               probs=p, num_classes=len(labels)) for i, p in enumerate(probs)]
    return ClassifyResponse(model=job.extra["model"], data=data, usage=usage)


def _rerank_response(job, metas, raw, usage: Usage) -> RerankResponse:
    scores = [label_scores(m, job.label_token_ids, True)[0] for m in metas]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: job.extra["top_n"]]
    docs = job.extra["documents"] if job.extra["return_documents"] else None
    results = [RerankHit(i, scores[i], RerankDocument(docs[i]) if docs else None) for i in order]
    meta = RerankMeta(ApiVersion(str(job.extra["api_version"])),
                      MetaTokens(usage.prompt_tokens), usage.cached_tokens)
    return RerankResponse(id=str(uuid.uuid4()), model=job.extra["model"], results=results,
                          usage=usage, meta=meta)


def _generate_response(job, metas, raw, usage: Usage) -> dict | list:
    return raw if job.extra["batched"] else raw[0]  # meta_info.flops: set by the dispatcher


_SHAPERS = {"score": _score_response, "classify": _classify_response,
            "rerank": _rerank_response, "generate": _generate_response}


# Helpers (shared with openai_api.py) ---------------------------------------------------------
def make_job(kind, prompts, label_ids, softmax, ctx: EndpointContext, worker_body=None,
             **extra) -> Job:
    limit = ctx.spec.max_prompt_tokens
    for i, p in enumerate(prompts):
        if not p:
            raise BadRequest(f"prompt {i} is empty")
        if limit and len(p) > limit:
            raise BadRequest(f"prompt {i} has {len(p)} tokens; the model takes at most {limit} "
                             f"(context {ctx.spec.max_context_len})")
    tuples = tuple(tuple(p) for p in prompts)
    return Job(kind, tuples, _common_prefix_len(tuples), tuple(label_ids), softmax,
               {"model": ctx.model_name, **extra}, worker_body or {})


def _common_prefix_len(prompts: tuple[tuple[int, ...], ...]) -> int:
    first, n = prompts[0], len(prompts[0])
    for p in prompts[1:]:
        k = 0
        while k < min(n, len(p)) and p[k] == first[k]:
            k += 1
        n = k
    return n


def check_count(num_prompts: int, name: str, ctx: EndpointContext) -> None:
    """413 before any tokenizing: a request of too many prompts costs the router nothing."""
    if num_prompts > ctx.max_items:
        raise BadRequest(f"{name} has {num_prompts} entries; this router takes at most "
                         f"{ctx.max_items} per request (--max-items-per-request): split it "
                         "into several requests", status=413)


def check_fields(body: dict, allowed: set[str], ctx: EndpointContext) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; accepted: {sorted(allowed)}")
    model = body.get("model")
    if model is not None and model not in (ctx.model_name, "default"):
        raise BadRequest(f"unknown model {model!r}; this router serves {ctx.model_name!r}",
                         status=404)


def is_ids(value: list) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def text_or_ids(value, name: str, ctx: EndpointContext, special: bool) -> list[int]:
    if isinstance(value, str):
        if not value:
            return []
        return ctx.tok.encode(value) if special else ctx.tok.encode_continuation([value])[0]
    if isinstance(value, list) and is_ids(value):
        bad = [t for t in value if not 0 <= t < ctx.spec.vocab_size]
        if bad:
            raise BadRequest(f"`{name}` has token ids outside [0, {ctx.spec.vocab_size}): {bad[:5]}")
        return list(value)
    raise BadRequest(f"`{name}` must be a string or a list of token ids")


def _label_ids(value, ctx: EndpointContext) -> list[int]:
    if not isinstance(value, list) or not value or not is_ids(value):
        raise BadRequest("`label_token_ids` is required: a non-empty list of token ids")
    bad = [t for t in value if not 0 <= t < ctx.tok.vocab_size]
    if bad:
        raise BadRequest(f"`label_token_ids` {bad} are outside the vocabulary "
                         f"[0, {ctx.tok.vocab_size})")
    return value


def _words(words, ctx: EndpointContext) -> list[int]:
    ids = []
    for w in words:
        tid = ctx.tok.single_token(w if w.startswith(" ") else " " + w)
        tid = tid if tid is not None else ctx.tok.single_token(w)
        if tid is None:
            raise BadRequest(f"label {w!r} is not a single token of this model's tokenizer; "
                             "use labels that are (or /v1/score with label_token_ids)")
        ids.append(tid)
    return ids


def positive_int(value, name: str) -> int:
    """value, checked to be an integer >= 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"`{name}` must be a positive integer")
    return value


def bool_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"`{name}` must be true or false")
    return value
