"""OpenAI-shaped requests -> Jobs, and SGLang-shaped worker replies -> OpenAI-shaped responses
(pure: the tiny model's tokenizer and chat template; the replies are written out here, in the
shape tests/moep_router/test_openai_e2e.py gets from real workers)."""

import json
import math

import msgspec
import pytest

from moep_router.chat_template import ChatTemplate
from moep_router.dispatcher import DispatchResult
from moep_router.endpoints import EndpointContext
from moep_router.jobs import BadRequest
from moep_router.messages import PromptTokensDetails, Usage
from moep_router.model_spec import ModelSpec
from moep_router.openai_api import (
    model_list, parse_chat, parse_completion, respond_chat, respond_completion,
)
from moep_router.tokenize import RouterTokenizer
from moep_sglang.client.types import parse_result


@pytest.fixture(scope="module")
def ctx(tiny_model):
    chat, _ = ChatTemplate.load(tiny_model)
    return EndpointContext(RouterTokenizer(tiny_model), ModelSpec.from_model_dir(tiny_model),
                           "tiny", "{query} {document}", chat=chat, created=1234)


def test_completion_defaults_to_the_one_token_of_the_prefill(ctx):
    job = parse_completion({"model": "tiny", "prompt": "The hotel was clean."}, ctx)
    assert job.prompts == (tuple(ctx.tok.encode("The hotel was clean.")),)
    body = job.generate_body()
    assert body["sampling_params"] == {"max_new_tokens": 1}
    assert "return_logprob" not in body  # no logprobs asked: none computed


def test_completion_maps_openai_fields_to_the_workers(ctx):
    job = parse_completion({
        "prompt": [[5, 6, 7], [5, 6, 8]], "max_tokens": 0, "echo": True, "logprobs": 3,
        "temperature": 0, "top_p": 0.5, "stop": "\n", "seed": 7, "logit_bias": {"661": 100},
        "presence_penalty": 0.1, "n": 1, "best_of": 1, "user": "u"}, ctx)
    body = job.generate_body()
    assert body["input_ids"] == [[5, 6, 7], [5, 6, 8]]
    assert body["sampling_params"] == {
        "max_new_tokens": 0, "temperature": 0, "top_p": 0.5, "presence_penalty": 0.1,
        "stop": ["\n"], "sampling_seed": 7, "logit_bias": {"661": 100.0}}
    assert body["return_logprob"] and body["top_logprobs_num"] == 3
    assert body["logprob_start_len"] == 0  # echo + logprobs: the prompt's own logprobs
    assert job.extra["echo_texts"] == [ctx.tok.decode([5, 6, 7]), ctx.tok.decode([5, 6, 8])]


def test_chat_renders_the_template_and_tokenizes_as_transformers(ctx, tiny_model):
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Judge."},
                {"role": "user", "content": [{"type": "text", "text": "Is it "},
                                             {"type": "text", "text": "clean?"}]}]
    job = parse_chat({"messages": messages, "logprobs": True, "top_logprobs": 5,
                      "max_completion_tokens": 1}, ctx)
    hf = AutoTokenizer.from_pretrained(tiny_model)
    flat = [messages[0], {"role": "user", "content": "Is it clean?"}]
    expected = hf.apply_chat_template(flat, tokenize=True, add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected  # 5.x: a dict
    assert list(job.prompts[0]) == list(expected)
    body = job.generate_body()
    assert body["top_logprobs_num"] == 5 and body["logprob_start_len"] == -1


BAD_COMPLETIONS = {
    "no prompt": ({}, "`prompt` is required"),
    "two tokens": ({"prompt": "x", "max_tokens": 2}, "prefill-only"),
    "n": ({"prompt": "x", "n": 2}, "`n` must be 1"),
    "best_of": ({"prompt": "x", "best_of": 3}, "`best_of` must be 1"),
    "suffix": ({"prompt": "x", "suffix": "y"}, "`suffix`"),
    "logprobs range": ({"prompt": "x", "logprobs": 21}, "from 0 to 20"),
    "unknown field": ({"prompt": "x", "frobnicate": 1}, "unknown field"),
    "temperature": ({"prompt": "x", "temperature": 3}, "`temperature` must be a number"),
    "logit_bias key": ({"prompt": "x", "logit_bias": {"yes": 1}}, "not a token id"),
    "logit_bias value": ({"prompt": "x", "logit_bias": {"5": 500}}, "from -100 to 100"),
    "logit_bias out of vocab": ({"prompt": "x", "logit_bias": {"99999999": 1}}, "outside"),
    "top_p zero": ({"prompt": "x", "top_p": 0}, "above 0"),
    "stream_options alone": ({"prompt": "x", "stream_options": {"include_usage": True}},
                             "needs `stream: true`"),
    "ids out of vocab": ({"prompt": [10**7]}, "outside"),
    "unknown model": ({"prompt": "x", "model": "gpt-4"}, "unknown model"),
}


@pytest.mark.parametrize("body,message", BAD_COMPLETIONS.values(), ids=BAD_COMPLETIONS.keys())
def test_bad_completions_say_what_was_wrong(ctx, body, message):
    with pytest.raises(BadRequest, match=message):
        parse_completion(body, ctx)


BAD_CHATS = {
    "no messages": ({}, "`messages` is required"),
    "bad role": ({"messages": [{"role": "robot", "content": "x"}]}, "role must be one of"),
    "image part": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, "only text parts"),
    "tool calls field": ({"messages": [{"role": "assistant", "content": "x",
                                        "tool_calls": []}]}, "does not serve"),
    "tools": ({"messages": [{"role": "user", "content": "x"}],
               "tools": [{"type": "function"}]}, "tools are not served"),
    "json mode": ({"messages": [{"role": "user", "content": "x"}],
                   "response_format": {"type": "json_object"}}, "response_format"),
    "top_logprobs alone": ({"messages": [{"role": "user", "content": "x"}],
                            "top_logprobs": 2}, "needs `logprobs: true`"),
    "two tokens": ({"messages": [{"role": "user", "content": "x"}],
                    "max_completion_tokens": 5}, "prefill-only"),
}


@pytest.mark.parametrize("body,message", BAD_CHATS.values(), ids=BAD_CHATS.keys())
def test_bad_chats_say_what_was_wrong(ctx, body, message):
    with pytest.raises(BadRequest, match=message):
        parse_chat(body, ctx)


def test_chat_without_a_template_says_how_to_give_one(ctx):
    bare = EndpointContext(ctx.tok, ctx.spec, "tiny", "", chat=None,
                           chat_missing="no template here: give one with --chat-template PATH")
    with pytest.raises(BadRequest, match="--chat-template"):
        parse_chat({"messages": [{"role": "user", "content": "x"}]}, bare)


def test_models_lists_the_served_model(ctx):
    card = model_list(ctx).data[0]
    assert (card.id, card.created, card.max_model_len) == ("tiny", 1234, ctx.spec.max_context_len)


# Responses: SGLang's /generate rows are [logprob, token id, text] ---------------------------
def _result(job, raw):
    usage = Usage(prompt_tokens=sum(map(len, job.prompts)), cached_tokens=2,
                  prompt_tokens_details=PromptTokensDetails(2), flops=1000)
    return DispatchResult(job, raw, usage, "w0")


def test_echo_with_logprobs_gives_every_prompt_token_and_offsets_into_the_text(ctx):
    yes, no = ctx.tok.single_token(" yes"), ctx.tok.single_token(" no")
    job = parse_completion({"prompt": "It was", "echo": True, "logprobs": 1}, ctx)
    ids = job.prompts[0]
    texts = [ctx.tok.decode([t]) for t in ids]
    meta = {"input_token_logprobs": [[None, ids[0], texts[0]]] + [
                [-1.5, t, x] for t, x in zip(ids[1:], texts[1:])],
            "input_top_logprobs": [None] + [[[-0.5, no, " no"]] for _ in ids[1:]],
            "output_token_logprobs": [[-0.25, yes, " yes"]],
            "output_top_logprobs": [[[-0.25, yes, " yes"]]],
            "finish_reason": {"type": "length", "length": 1}}
    body, kind = respond_completion(_result(job, [{"text": " yes", "output_ids": [yes],
                                                   "meta_info": meta}]), ctx)
    choice = json.loads(body)["choices"][0]
    assert kind == "application/json" and choice["text"] == "It was yes"
    lp = choice["logprobs"]
    assert lp["tokens"] == texts + [" yes"] and lp["token_logprobs"][0] is None
    assert lp["top_logprobs"][0] is None
    assert lp["top_logprobs"][1] == {" no": -0.5, texts[1]: -1.5}  # the token itself added
    assert [choice["text"][o:o + len(t)] for o, t in zip(lp["text_offset"], lp["tokens"])] \
        == lp["tokens"]
    usage = json.loads(body)["usage"]
    assert usage["completion_tokens"] == 1 and usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + 1 and usage["flops"] == 1000


def test_a_piece_of_a_character_is_named_by_its_bytes_and_minus_inf_is_finite(ctx):
    lone = [i for i in range(ctx.tok.vocab_size)
            if (b := ctx.tok.token_bytes(i)) is not None and len(b) == 1 and b[0] >= 0x80]
    tid = lone[0]  # one byte >= 0x80: a piece of a character, never whole UTF-8
    raw = ctx.tok.token_bytes(tid)
    job = parse_chat({"messages": [{"role": "user", "content": "x"}], "logprobs": True,
                      "top_logprobs": 1}, ctx)
    meta = {"output_token_logprobs": [[-math.inf, tid, "\ufffd"]],
            "output_top_logprobs": [[[-math.inf, tid, "\ufffd"]]], "finish_reason": None}
    body, _ = respond_chat(_result(job, [{"text": "\ufffd", "output_ids": [tid],
                                          "meta_info": meta}]), ctx)
    token = json.loads(body)["choices"][0]["logprobs"]["content"][0]
    assert token["token"] == "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
    assert token["bytes"] == list(raw) and token["logprob"] == -9999.0


def test_streams_are_server_sent_events_ending_in_done(ctx):
    job = parse_chat({"messages": [{"role": "user", "content": "x"}], "stream": True,
                      "stream_options": {"include_usage": True}}, ctx)
    meta = {"finish_reason": {"type": "length"}}
    body, kind = respond_chat(_result(job, [{"text": " yes", "output_ids": [9],
                                             "meta_info": meta}]), ctx)
    events = [e.removeprefix("data: ") for e in body.decode().split("\n\n") if e]
    assert kind == "text/event-stream" and events[-1] == "[DONE]"
    first, last = json.loads(events[0]), json.loads(events[1])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"content": " yes", "role": "assistant"}
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 1


def test_the_sdk_decodes_what_the_openai_endpoints_encode(ctx):
    meta = {"output_token_logprobs": [[-0.25, 9, " yes"]],
            "output_top_logprobs": [[[-0.25, 9, " yes"]]], "finish_reason": {"type": "length"}}
    raw = [{"text": " yes", "output_ids": [9], "meta_info": meta}]
    job = parse_completion({"prompt": "x", "logprobs": 1}, ctx)
    body, _ = respond_completion(_result(job, raw), ctx)
    completion = parse_result("completions", body)
    assert completion.choices[0].logprobs.token_logprobs == [-0.25]
    assert completion.usage.cached_tokens == 2
    assert json.loads(body) == msgspec.to_builtins(completion)
    job = parse_chat({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, ctx)
    body, _ = respond_chat(_result(job, raw), ctx)
    chat = parse_result("chat", body)
    assert chat.choices[0].message.content == " yes" and chat.usage.flops == 1000
    assert json.loads(body) == msgspec.to_builtins(chat)
