"""The OpenAI-shaped front ends: /v1/completions, /v1/chat/completions and /v1/models, so that
clients written for OpenAI's API (the `openai` SDK, LangChain, curl scripts) score through the
router unchanged.

Prefill-only: a prompt's forward pass gives the logits of the token after it, so a completion
is at most that one token. `max_tokens` (chat: `max_completion_tokens` too) may be 0 or 1, and
is 1 when left out; anything larger is refused with 400. What these endpoints are used for in
classification and scoring fits in that:
- the next token and its top `logprobs` (chat: `logprobs` + `top_logprobs`): a label's
  probability, an LLM judge's yes/no;
- `echo` with `logprobs` and max_tokens 0 (legacy completions): the logprob of every prompt
  token, for likelihood scoring of candidate texts;
- `logit_bias` to keep the answer among the label tokens.

Each request becomes the worker call of every endpoint (jobs.Job -> one batched SGLang
/generate with token ids) with these fields set:

| request | worker /generate |
|---|---|
| max_tokens, temperature, top_p, top_k, min_p, stop, seed, presence_penalty, frequency_penalty, repetition_penalty, logit_bias | sampling_params (seed as sampling_seed) |
| logprobs k (chat: top_logprobs k) | return_logprob, top_logprobs_num k, return_text_in_logprobs |
| echo with logprobs | logprob_start_len 0 (the prompt's logprobs) |

Responses follow OpenAI's shapes (messages.py: CompletionResponse, ChatCompletionResponse,
ModelList); usage adds cached_tokens and the router's true FLOPs as every endpoint's does.
`stream: true` answers the same content as server-sent events (one event per choice, then the
usage event with `stream_options.include_usage`, then `[DONE]`). `n` and `best_of` must be 1;
tools, non-text content parts and response formats other than text are refused with 400.
"""

from __future__ import annotations

import math
import time
import uuid

from moep_router.chat_template import ChatTemplateError
from moep_router.dispatcher import DispatchResult
from moep_router.endpoints import (
    EndpointContext, bool_field, check_count, check_fields, is_ids, make_job, text_or_ids,
)
from moep_router.jobs import BadRequest, Job
from moep_router.messages import (
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse,
    ChatLogprobs, ChatMessage, ChatTokenLogprob, CompletionChoice, CompletionLogprobs,
    CompletionResponse, CompletionUsage, ModelCard, ModelList, PromptTokensDetails, TopLogprob,
    encode,
)

MAX_TOP_LOGPROBS = 20  # vLLM's and SGLang's bound (OpenAI's own: 5 for completions, 20 chat)
SSE = "text/event-stream"

# field: (low, high), inclusive; top_p and repetition_penalty must also be above 0 (SGLang's)
_SAMPLING = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "min_p": (0.0, 1.0),
             "presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0),
             "repetition_penalty": (0.0, 2.0)}
_ABOVE_ZERO = {"top_p", "repetition_penalty"}
_COMMON = {"model", "max_tokens", "n", "stream", "stream_options", "stop", "seed", "top_k",
           "logit_bias", "user", *_SAMPLING}
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "logprobs", "best_of", "suffix"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs",
                         "chat_template_kwargs", "add_generation_prompt", "response_format",
                         "tools", "tool_choice", "parallel_tool_calls"}
_ROLES = {"system", "developer", "user", "assistant", "tool"}


# Parsing ------------------------------------------------------------------------------------
def parse_completion(body: dict, ctx: EndpointContext) -> Job:
    check_fields(body, COMPLETION_FIELDS, ctx)
    prompts = body.get("prompt")
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and is_ids(prompts)):
        prompts = [prompts]
    if not isinstance(prompts, list) or not prompts:
        raise BadRequest("`prompt` is required: a string, a list of strings, a list of token "
                         "ids or a list of token-id lists")
    check_count(len(prompts), "`prompt`", ctx)
    if body.get("suffix"):
        raise BadRequest("`suffix` (insertion) is not served: the router generates at most the "
                         "one token after the prompt")
    _check_one(body, "best_of")
    echo = bool_field(body, "echo", False)
    top = _top_k(body, "logprobs")
    worker = _worker_fields(body, _max_tokens(body, ("max_tokens",)), top,
                            echo and top is not None, ctx)
    stream = _stream(body)
    # every field checked: now the tokenizing
    ids = [text_or_ids(p, f"prompt[{i}]", ctx, special=True) for i, p in enumerate(prompts)]
    echo_texts = None
    if echo:
        echo_texts = [p if isinstance(p, str) else ctx.tok.decode(i)
                      for p, i in zip(prompts, ids)]
    return make_job("completion", ids, (), False, ctx, worker_body=worker,
                    echo_texts=echo_texts, logprobs=top, **stream)


def parse_chat(body: dict, ctx: EndpointContext) -> Job:
    check_fields(body, CHAT_FIELDS, ctx)
    if ctx.chat is None:
        raise BadRequest(f"/v1/chat/completions needs a chat template: {ctx.chat_missing}")
    if body.get("tools") or body.get("tool_choice") not in (None, "none", "auto"):
        raise BadRequest("tools are not served: the router generates at most one token")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise BadRequest("`response_format` other than {\"type\": \"text\"} is not served")
    logprobs = bool_field(body, "logprobs", False)
    top = _top_k(body, "top_logprobs")
    if top is not None and not logprobs:
        raise BadRequest("`top_logprobs` needs `logprobs: true`")
    if logprobs and top is None:
        top = 0
    worker = _worker_fields(body, _max_tokens(body, ("max_completion_tokens", "max_tokens")),
                            top, False, ctx)
    stream = _stream(body)
    messages = _messages(body.get("messages"))
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise BadRequest("`chat_template_kwargs` must be an object")
    add_generation_prompt = bool_field(body, "add_generation_prompt", True)
    # every field checked: now the rendering and tokenizing
    try:
        text = ctx.chat.render(messages, add_generation_prompt, **kwargs)
    except ChatTemplateError as exc:
        raise BadRequest(str(exc)) from exc
    ids = ctx.tok.encode_continuation([text])[0]  # the template writes its special tokens
    return make_job("chat", [ids], (), False, ctx, worker_body=worker, logprobs=top, **stream)


def model_list(ctx: EndpointContext) -> ModelList:
    return ModelList([ModelCard(id=ctx.model_name, created=ctx.created,
                                max_model_len=ctx.spec.max_context_len or None)])


def _messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadRequest("`messages` is required: a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object with `role` and `content`")
        unknown = sorted(set(m) - {"role", "content", "name"})
        if unknown:
            raise BadRequest(f"messages[{i}] has field(s) {unknown} this router does not serve; "
                             "accepted: role, content, name")
        role = m.get("role")
        if role not in _ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {sorted(_ROLES)}")
        out.append({**m, "content": _content(m.get("content"), i)})
    return out


def _content(value, i: int) -> str:
    """A message's content as the text templates expect: a string, or text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise BadRequest(f"messages[{i}].content: only text parts "
                                 "({\"type\": \"text\", \"text\": ...}) are served")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"messages[{i}].content must be a string or a list of text parts")


def _max_tokens(body: dict, names: tuple[str, ...]) -> int:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value not in (0, 1):
            raise BadRequest(f"`{name}` is {value!r}; this router serves prefill-only requests: "
                             "0 (the prompt alone) or 1 (the token its forward pass gives)")
        return value
    return 1


def _check_one(body: dict, name: str) -> None:
    value = body.get(name)
    if value is not None and value != 1:
        raise BadRequest(f"`{name}` must be 1: send several prompts for several completions")


def _top_k(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"`{name}` must be an integer from 0 to {MAX_TOP_LOGPROBS}")
    return value


def _stream(body: dict) -> dict:
    stream = bool_field(body, "stream", False)
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise BadRequest("`stream_options` needs `stream: true`")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise BadRequest("`stream_options` takes only `include_usage`")
    include = bool(options and options.get("include_usage"))
    return {"stream": stream, "include_usage": include}


def _worker_fields(body: dict, max_tokens: int, top: int | None, prompt_logprobs: bool,
                   ctx: EndpointContext) -> dict:
    """The /generate fields of the request (jobs.Job.generate_body adds the prompts);
    prompt_logprobs: the logprobs of the prompt's tokens too (echo)."""
    _check_one(body, "n")
    params: dict = {"max_new_tokens": max_tokens}
    for name, (low, high) in _SAMPLING.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not low <= value <= high or (name in _ABOVE_ZERO and value == 0):
            above = " (above 0)" if name in _ABOVE_ZERO else ""
            raise BadRequest(f"`{name}` must be a number from {low:g} to {high:g}{above}")
        params[name] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or (top_k < 1 and top_k != -1):
            raise BadRequest("`top_k` must be a positive integer (or -1: all)")
        params["top_k"] = top_k
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("`stop` must be a string or a list of strings")
        params["stop"] = stop
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise BadRequest("`seed` must be an integer")
        params["sampling_seed"] = seed
    bias = body.get("logit_bias")
    if bias:
        params["logit_bias"] = _logit_bias(bias, ctx.spec.vocab_size)
    fields = {"sampling_params": params}
    if top is not None:
        fields.update(return_logprob=True, top_logprobs_num=top, return_text_in_logprobs=True,
                      logprob_start_len=0 if prompt_logprobs else -1)
    return fields


def _logit_bias(value, vocab_size: int) -> dict[str, float]:
    if not isinstance(value, dict):
        raise BadRequest("`logit_bias` must be an object {token id: bias}")
    out = {}
    for key, bias in value.items():
        try:
            tid = int(key)
        except (TypeError, ValueError):
            raise BadRequest(f"`logit_bias` key {key!r} is not a token id") from None
        if not 0 <= tid < vocab_size:
            raise BadRequest(f"`logit_bias` key {key!r} is outside the vocabulary "
                             f"[0, {vocab_size})")
        if not isinstance(bias, (int, float)) or isinstance(bias, bool) \
                or not -100 <= bias <= 100:
            raise BadRequest(f"`logit_bias`[{key!r}] must be a number from -100 to 100")
        out[str(tid)] = float(bias)
    return out


# Responses ----------------------------------------------------------------------------------
def respond_completion(result: DispatchResult, ctx: EndpointContext) -> tuple[bytes, str]:
    """(body, content type) of a /v1/completions answer: JSON, or its event stream."""
    job = result.job
    choices = []
    for i, (r, meta) in enumerate(zip(result.raw, result.metas)):
        text = r.get("text", "")
        if job.extra["echo_texts"] is not None:
            text = job.extra["echo_texts"][i] + text
        logprobs = None
        if job.extra["logprobs"] is not None:
            logprobs = _completion_logprobs(meta, job.extra["echo_texts"] is not None, ctx)
        choices.append(CompletionChoice(i, text, logprobs, _finish(meta)))
    usage = _usage(result)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if not job.extra["stream"]:
        return encode(CompletionResponse(id=rid, created=created, model=job.extra["model"],
                                         choices=choices, usage=usage)), "application/json"
    events = [CompletionResponse(id=rid, created=created, model=job.extra["model"],
                                 choices=[c]) for c in choices]
    if job.extra["include_usage"]:
        events.append(CompletionResponse(id=rid, created=created, model=job.extra["model"],
                                         choices=[], usage=usage))
    return _sse(events), SSE


def respond_chat(result: DispatchResult, ctx: EndpointContext) -> tuple[bytes, str]:
    """(body, content type) of a /v1/chat/completions answer: JSON, or its event stream."""
    job = result.job
    r, meta = result.raw[0], result.metas[0]
    logprobs = _chat_logprobs(meta, ctx) if job.extra["logprobs"] is not None else None
    text, finish = r.get("text", ""), _finish(meta)
    usage = _usage(result)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not job.extra["stream"]:
        choice = ChatChoice(0, ChatMessage(text), logprobs, finish)
        return encode(ChatCompletionResponse(id=rid, created=created, model=job.extra["model"],
                                             choices=[choice], usage=usage)), "application/json"
    events = [ChatCompletionChunk(id=rid, created=created, model=job.extra["model"],
                                  choices=[ChatChunkChoice(0, ChatMessage(text), logprobs, finish)])]
    if job.extra["include_usage"]:
        events.append(ChatCompletionChunk(id=rid, created=created, model=job.extra["model"],
                                          choices=[], usage=usage))
    return _sse(events), SSE


def _finish(meta: dict) -> str | None:
    reason = meta.get("finish_reason")
    return reason.get("type") if isinstance(reason, dict) else reason


def _usage(result: DispatchResult) -> CompletionUsage:
    u = result.usage
    generated = sum(len(r.get("output_ids") or ()) for r in result.raw)
    return CompletionUsage(u.prompt_tokens, generated, u.prompt_tokens + generated,
                           PromptTokensDetails(u.cached_tokens), u.cached_tokens, u.flops)


def _completion_logprobs(meta: dict, with_prompt: bool, ctx: EndpointContext
                         ) -> CompletionLogprobs:
    """SGLang's rows ([logprob, token id, text]) in the legacy shape: the prompt's tokens first
    (with_prompt), then the generated one. Tokens are named by RouterTokenizer.token_label;
    text_offset counts the worker's text of each token (as the choice's text is built). Each
    top_logprobs entry holds the likeliest tokens and the token itself, as OpenAI's does."""
    label = ctx.tok.token_label
    rows = list(meta.get("input_token_logprobs") or ()) if with_prompt else []
    tops = list(meta.get("input_top_logprobs") or ()) if with_prompt else []
    rows += meta.get("output_token_logprobs") or ()
    tops += meta.get("output_top_logprobs") or ()
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    offset = 0
    for n, (logprob, tid, text) in enumerate(rows):
        top = tops[n] if n < len(tops) else None
        tokens.append(label(tid, text))
        token_logprobs.append(_number(logprob))
        if logprob is None:
            top_logprobs.append(None)  # the first prompt token: nothing before it
        else:
            entry = {label(i, t): _number(lp) for lp, i, t in (top or ())}
            entry.setdefault(tokens[-1], _number(logprob))
            top_logprobs.append(entry)
        offsets.append(offset)
        offset += len(text)
    return CompletionLogprobs(tokens, token_logprobs, top_logprobs, offsets)


def _chat_logprobs(meta: dict, ctx: EndpointContext) -> ChatLogprobs:
    rows = meta.get("output_token_logprobs") or ()
    tops = meta.get("output_top_logprobs") or ()

    def named(tid: int, text: str) -> tuple[str, list[int]]:
        raw = ctx.tok.token_bytes(tid)
        return ctx.tok.token_label(tid, text), list(raw if raw is not None else text.encode())

    content = []
    for n, (logprob, tid, text) in enumerate(rows):
        top = tops[n] if n < len(tops) and tops[n] else ()
        content.append(ChatTokenLogprob(
            *named(tid, text), _number(logprob), [TopLogprob(*named(i, t), _number(lp))
                                                  for lp, i, t in top]))
    return ChatLogprobs(content)


def _number(logprob) -> float | None:
    """JSON has no -inf: a token the model rules out (a logit_bias of -100) reads -9999.0, the
    floor vLLM's OpenAI server puts on logprobs."""
    if logprob is None:
        return None
    return -9999.0 if logprob == -math.inf else float(logprob)


def _sse(events) -> bytes:
    return b"".join(b"data: " + encode(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
