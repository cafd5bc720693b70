"""OpenAI's own Python SDK against the router in front of a real tiny CPU worker: the answers
equal those of SGLang's OpenAI server on the same worker (same token, logprobs, prompt tokens:
the same chat template and tokenization), and what SGLang refuses or cannot do is checked
against its native /generate."""

import math

import openai
import pytest

from tests.helpers import post


@pytest.fixture(scope="module")
def via(router):
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def direct(worker):
    return openai.OpenAI(base_url=f"{worker.config.url}/v1", api_key="unused", max_retries=0)


def _tops(entries) -> dict[str, float]:
    return {e.token: e.logprob for e in entries}


def test_models(via):
    assert [m.id for m in via.models.list().data] == ["tiny"]
    card = via.models.retrieve("tiny")
    assert card.id == "tiny" and card.object == "model" and card.max_model_len == 2048
    with pytest.raises(openai.NotFoundError, match="no such path '/v1/models/other'"):
        via.models.retrieve("other")


def test_next_token_and_its_logprobs_equal_sglangs_completions(via, direct):
    kw = dict(model="tiny", prompt=["The hotel was clean. Answer:", "The river was quiet."],
              max_tokens=1, logprobs=3, temperature=0)
    ours, theirs = via.completions.create(**kw), direct.completions.create(**kw)
    assert len(ours.choices) == 2
    for a, b in zip(ours.choices, theirs.choices):
        assert a.text == b.text and a.finish_reason == b.finish_reason == "length"
        assert a.logprobs.token_logprobs[0] == pytest.approx(b.logprobs.token_logprobs[0],
                                                             abs=1e-4)
        # SGLang keys tokens by their text alone, so two pieces of characters (both U+FFFD)
        # collide and one is lost; ours names them by their bytes: a superset
        ours_top = list(a.logprobs.top_logprobs[0].values())
        for lp in b.logprobs.top_logprobs[0].values():
            assert min(abs(lp - x) for x in ours_top) < 1e-4
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert ours.usage.completion_tokens == 2 and ours.usage.model_extra["flops"] > 0


def test_echo_gives_the_prompts_logprobs_as_sglangs_generate(via, worker):
    prompt = "The hotel was clean and the staff were kind."
    ours = via.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True,
                                  logprobs=2)
    choice = ours.choices[0]
    assert choice.text == prompt and ours.usage.completion_tokens == 0
    status, native = post(f"{worker.config.url}/generate", {
        "text": prompt, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True,
        "logprob_start_len": 0, "return_text_in_logprobs": True})
    assert status == 200
    expected = [row[0] for row in native["meta_info"]["input_token_logprobs"]]
    assert choice.logprobs.token_logprobs[0] is None and expected[0] is None
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected[1:], abs=1e-4)
    assert "".join(choice.logprobs.tokens) == prompt


def test_chat_equals_sglangs_chat_completions(via, direct):
    kw = dict(model="tiny", max_tokens=1, logprobs=True, top_logprobs=4, temperature=0,
              messages=[{"role": "system", "content": "You judge hotels."},
                        {"role": "user", "content": "Was it clean? Answer yes or no."}])
    ours, theirs = via.chat.completions.create(**kw), direct.chat.completions.create(**kw)
    a, b = ours.choices[0], theirs.choices[0]
    assert a.message.role == "assistant" and a.message.content == b.message.content
    assert a.logprobs.content[0].logprob == pytest.approx(b.logprobs.content[0].logprob, abs=1e-4)
    assert sorted(_tops(a.logprobs.content[0].top_logprobs).values()) == pytest.approx(
        sorted(_tops(b.logprobs.content[0].top_logprobs).values()), abs=1e-4)
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens  # same template and ids


def test_streamed_chat_and_completion_carry_the_same_answer(via):
    messages = [{"role": "user", "content": "Is the room quiet?"}]
    whole = via.chat.completions.create(model="tiny", messages=messages, temperature=0)
    chunks = list(via.chat.completions.create(model="tiny", messages=messages, temperature=0,
                                              stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) \
        == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    text = "".join(c.choices[0].text for c in via.completions.create(
        model="tiny", prompt="Is the room quiet?", temperature=0, stream=True))
    assert text == via.completions.create(model="tiny", prompt="Is the room quiet?",
                                          temperature=0).choices[0].text


def test_logit_bias_keeps_the_answer_among_the_labels(via):
    labels = {" yes": 661, " no": 362}  # single tokens of the generated tokenizer
    r = via.completions.create(model="tiny", prompt="Was it good? Answer:", max_tokens=1,
                               logprobs=2, logit_bias={str(t): 100 for t in labels.values()},
                               temperature=0)
    top = r.choices[0].logprobs.top_logprobs[0]
    assert set(top) == set(labels) and r.choices[0].text in labels
    assert sum(math.exp(v) for v in top.values()) == pytest.approx(1, abs=1e-3)


def test_what_cannot_be_served_is_a_400_with_the_reason(via):
    with pytest.raises(openai.BadRequestError, match="prefill-only"):
        via.completions.create(model="tiny", prompt="x", max_tokens=16)
    with pytest.raises(openai.BadRequestError, match="tools are not served"):
        via.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "function", "function": {"name": "f"}}])
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        via.completions.create(model="gpt-4o", prompt="x")
