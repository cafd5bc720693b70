"""The router's chat templates render as transformers' apply_chat_template does (pure: the tiny
model's files and templates written here; transformers is the reference)."""

import json
import shutil

import pytest

from moep_router.chat_template import ChatTemplate, ChatTemplateError

# Qwen3-shaped (written for this test): the last user turn found by walking the messages
# backwards with a namespace, string methods, tojson of tools, raise_exception, and the
# enable_thinking switch of the generation prompt.
QWEN3_SHAPED = """
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- if tools %}{{- 'tools: ' + (tools | tojson) + '\\n' }}{%- endif %}
{%- set ns = namespace(last_user=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if message.role == 'user' and ns.last_user == messages|length - 1 %}
        {%- set ns.last_user = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('unknown role ' + message.role) }}
    {%- elif message.role == 'assistant' and '</think>' in message.content %}
        {%- set answer = message.content.split('</think>')[-1].lstrip('\\n') %}
        {{- '<|im_start|>assistant\\n' + answer.strip() + '<|im_end|>\\n' }}
    {%- elif message.role != 'system' or not loop.first %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
        {%- if loop.index0 == ns.last_user %}{{- '' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

CONVERSATIONS = [
    [{"role": "user", "content": "Is the hotel clean? Answer yes or no."}],
    [{"role": "system", "content": "You are a strict judge."},
     {"role": "user", "content": "Rate: «très propre», 5/5 ✓"},
     {"role": "assistant", "content": "<think>\nfine\n</think>\n\n yes"},
     {"role": "user", "content": "And the staff?"}],
]


@pytest.fixture()
def model_dir(tiny_model, tmp_path):
    """A copy of the tiny model's tokenizer files (each test may rewrite the template)."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "config.json"):
        shutil.copy(tiny_model / name, tmp_path / name)
    return tmp_path


def _with_template(model_dir, template) -> None:
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["chat_template"] = template
    path.write_text(json.dumps(config))


def _hf(model_dir, messages, **kwargs) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_the_generated_models_chatml_renders_as_transformers(model_dir, messages):
    chat, origin = ChatTemplate.load(model_dir)
    assert chat is not None and origin.endswith("tokenizer_config.json")
    assert chat.render(messages) == _hf(model_dir, messages)


@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": False}, {"enable_thinking": True}])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_a_qwen3_shaped_template_renders_as_transformers(model_dir, messages, kwargs):
    _with_template(model_dir, QWEN3_SHAPED)
    chat, _ = ChatTemplate.load(model_dir)
    assert chat.render(messages, **kwargs) == _hf(model_dir, messages, **kwargs)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "é"}}]
    assert chat.render(messages, tools=tools) == _hf(model_dir, messages, tools=tools)


def test_raise_exception_in_the_template_is_a_chat_template_error(model_dir):
    _with_template(model_dir, QWEN3_SHAPED)
    chat, _ = ChatTemplate.load(model_dir)
    with pytest.raises(ChatTemplateError, match="unknown role tool"):
        chat.render([{"role": "tool", "content": "42"}])


def test_named_templates_take_default_and_a_jinja_file_is_found(model_dir):
    _with_template(model_dir, [{"name": "tool_use", "template": "T"},
                               {"name": "default", "template": "D{{ messages|length }}"}])
    chat, _ = ChatTemplate.load(model_dir)
    assert chat.render([{"role": "user", "content": "x"}]) == "D1"
    _with_template(model_dir, None)
    (model_dir / "chat_template.jinja").write_text("J{{ eos_token }}")
    chat, origin = ChatTemplate.load(model_dir)
    assert origin.endswith("chat_template.jinja")
    assert chat.render([{"role": "user", "content": "x"}]) == "J<|endoftext|>"


def test_no_template_says_why_and_an_override_wins(model_dir, tmp_path_factory):
    _with_template(model_dir, None)
    chat, why = ChatTemplate.load(model_dir)
    assert chat is None and "--chat-template" in why
    override = tmp_path_factory.mktemp("tpl") / "t.jinja"
    override.write_text("O{{ messages[0].content }}")
    chat, origin = ChatTemplate.load(model_dir, override)
    assert origin == str(override) and chat.render([{"role": "user", "content": "x"}]) == "Ox"


def test_a_template_that_does_not_compile_turns_chat_off_or_fails_the_override(model_dir,
                                                                                tmp_path):
    _with_template(model_dir, "{% for m in messages %}")
    chat, why = ChatTemplate.load(model_dir)
    assert chat is None and "does not compile" in why
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% if %}")
    with pytest.raises(ValueError, match="--chat-template"):
        ChatTemplate.load(model_dir, bad)
