"""Prefill-only scoring hooks on SGLang's /v1/score.

1. Validation: SGLang answers an empty `items` list with 200 and no scores, and a missing or
   negative label id deep inside the engine; we reject those up front with a 400 that says why.
2. Cache report: SGLang returns `usage.prompt_tokens` for scoring but drops the per-request
   `cached_tokens` it already computes; we sum them and return `usage.cached_tokens` (and the
   OpenAI-style `usage.prompt_tokens_details.cached_tokens`).
"""

from __future__ import annotations

import contextvars
from typing import Any

# Cached prompt tokens of the scoring request being handled in this asyncio task.
# Set by count_cached_tokens (inside TokenizerManager.score_request), read by add_cache_usage.
_cached_tokens: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "moep_score_cached_tokens", default=None
)


def validate_score_request(self, request) -> str | None:
    """REPLACE for OpenAIServingScore._validate_request: an error message, or None if valid."""
    items = request.items
    if items is None:
        return "`items` is required: a string, a list of strings, or a list of token-id lists"
    if isinstance(items, list) and len(items) == 0:
        return "`items` is empty: send at least one item to score"
    if isinstance(items, list) and any(isinstance(i, list) and not i for i in items):
        return "`items` contains an empty token-id list"
    labels = request.label_token_ids
    if labels is None or len(labels) == 0:
        return "`label_token_ids` is required: the token ids whose probabilities to return"
    bad = [t for t in labels if t < 0]
    if bad:
        return f"`label_token_ids` must be non-negative token ids; got {bad}"
    return None


def count_cached_tokens(original, self, results, *args, **kwargs):
    """AROUND TokenizerManager._process_single_item_scoring_results: remember cached tokens."""
    score = original(self, results, *args, **kwargs)
    _cached_tokens.set(sum(_meta(r).get("cached_tokens", 0) or 0 for r in results))
    return score


async def add_cache_usage(original, self, *args, **kwargs):
    """AROUND OpenAIServingScore._handle_non_streaming_request: add cached tokens to usage."""
    token = _cached_tokens.set(None)
    try:
        response = await original(self, *args, **kwargs)
        cached = _cached_tokens.get()
    finally:
        _cached_tokens.reset(token)
    if cached is None or getattr(response, "status_code", 0) != 200:
        return response
    return _with_cached_tokens(response, cached)


def _with_cached_tokens(response, cached: int):
    import orjson
    from fastapi.responses import ORJSONResponse

    body = orjson.loads(response.body)
    usage = body.get("usage") or {}
    usage["cached_tokens"] = cached
    usage["prompt_tokens_details"] = {"cached_tokens": cached}
    body["usage"] = usage
    return ORJSONResponse(content=body, status_code=200)


def _meta(result: Any) -> dict:
    return result.get("meta_info", {}) if isinstance(result, dict) else {}
