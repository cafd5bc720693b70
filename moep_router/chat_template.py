"""The model's chat template, rendered as transformers renders it, without transformers.

/v1/chat/completions turns `messages` into one prompt text with the Jinja template the model
ships: `chat_template` of tokenizer_config.json (a string, or a list of named templates of which
"default" is taken), else a `chat_template.jinja` file beside it (transformers >= 4.43 writes it
there); `--chat-template PATH` overrides both. The environment is transformers' own
(`_compile_jinja_template`): a sandbox with trim_blocks and lstrip_blocks, the loopcontrols
extension, `raise_exception`, `strftime_now` and a `tojson` filter that keeps non-ASCII text, and
the context of `apply_chat_template`: messages, add_generation_prompt, tools=None, documents=None,
the special tokens of tokenizer_config.json, and the request's `chat_template_kwargs` (Qwen3's
`enable_thinking`, for one). The rendered text is tokenized without adding special tokens, as
`apply_chat_template(tokenize=True)` does: the template writes its own.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class ChatTemplateError(ValueError):
    """The template refused the messages (its raise_exception) or failed while rendering."""


class ChatTemplate:
    def __init__(self, source: str, special_tokens: dict[str, str]) -> None:
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._jinja_errors = (jinja2.exceptions.TemplateError,)
        self._template = env.from_string(source)  # raises TemplateSyntaxError on a bad one
        self.special_tokens = special_tokens

    @classmethod
    def load(cls, model_path: Path,
             override: Path | None = None) -> tuple[ChatTemplate | None, str]:
        """(the template, where it came from) or (None, why there is none)."""
        config = _tokenizer_config(model_path)
        special = {k: _token_text(config.get(k)) for k in SPECIAL_TOKEN_KEYS}
        if override is not None:
            try:
                source, origin = override.read_text(), str(override)
            except OSError as exc:
                raise ValueError(f"--chat-template {override}: {exc.strerror}") from exc
        else:
            source, origin = _shipped_source(model_path, config)
            if source is None:
                return None, origin
        try:
            import jinja2  # noqa: F401
        except ImportError:
            return None, "jinja2 is not installed (pip install jinja2)"
        try:
            return cls(source, {k: v for k, v in special.items() if v is not None}), origin
        except Exception as exc:  # jinja2's TemplateSyntaxError, with its line
            if override is not None:
                raise ValueError(f"--chat-template {override}: {exc}") from exc
            return None, f"the chat template of {origin} does not compile: {exc}"

    def render(self, messages: list[dict], add_generation_prompt: bool = True,
               **kwargs) -> str:
        """The prompt text of `messages` (role/content dicts, content as a string)."""
        context = {**self.special_tokens, **kwargs, "messages": messages,
                   "add_generation_prompt": add_generation_prompt}
        context.setdefault("tools", None)
        context.setdefault("documents", None)
        try:
            return self._template.render(**context)
        except self._jinja_errors as exc:
            raise ChatTemplateError(f"the model's chat template refused the messages: {exc}") \
                from exc
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            raise ChatTemplateError(f"the model's chat template failed on the messages: "
                                    f"{type(exc).__name__}: {exc}") from exc


def _tokenizer_config(model_path: Path) -> dict:
    path = model_path / "tokenizer_config.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _shipped_source(model_path: Path, config: dict) -> tuple[str | None, str]:
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str) and template:
        return template, f"{model_path / 'tokenizer_config.json'}"
    path = model_path / "chat_template.jinja"
    if path.is_file():
        return path.read_text(), str(path)
    return None, (f"{model_path} ships no chat template (tokenizer_config.json has no "
                  "`chat_template`, and there is no chat_template.jinja): give one with "
                  "--chat-template PATH")


def _token_text(value) -> str | None:
    """A special token of tokenizer_config.json: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None
