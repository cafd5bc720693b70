"""Client request bodies -> validated, tokenized Jobs; worker replies -> client responses.

Every prefill-only endpoint becomes the same worker call: one batched SGLang `/generate` with
`max_new_tokens=0` and, where labels are asked for, `token_ids_logprob` at the last position
(what SGLang's own /v1/score does inside). That gives the router each prompt's exact
`cached_tokens`, hence the true FLOPs spent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from moep_router.messages import label_logprob_fields, label_logprob_rows
from moep_router.prefix_keys import PromptKeys


class BadRequest(ValueError):
    """A 4xx for the client, with a message that says what was wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Job:
    kind: str  # "score" | "classify" | "rerank" | "generate": how to shape the response
    prompts: tuple[tuple[int, ...], ...]  # token ids of every prompt the worker prefills
    prefix_len: int  # tokens every prompt shares (the routing key is prompts[0][:prefix_len])
    label_token_ids: tuple[int, ...]  # labels read at the last position (empty for generate)
    apply_softmax: bool  # renormalise over the labels
    extra: dict  # endpoint-specific fields for the response (labels, documents, top_n, ...)
    worker_body: dict  # extra /generate fields passed through (generate only)

    @functools.cached_property
    def routing_key(self) -> PromptKeys:
        """The shared prefix (the whole prompt for one prompt), with its chunk keys."""
        return PromptKeys(self.prompts[0][: max(self.prefix_len, 1)])

    def generate_body(self) -> dict:
        # One prompt goes unbatched: SGLang's batch path costs more per request.
        ids = [list(p) for p in self.prompts] if len(self.prompts) > 1 else list(self.prompts[0])
        body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 0}}
        if self.label_token_ids:
            body.update(label_logprob_fields(self.label_token_ids))
        body.update(self.worker_body)
        return body


def label_scores(meta: dict, labels: tuple[int, ...], apply_softmax: bool) -> list[float]:
    """Probabilities of `labels` after the prompt (SGLang's /v1/score conversion, no torch)."""
    found = {int(tok): lp for lp, tok, *_ in label_logprob_rows(meta)[0]}
    lps = [found.get(t, -math.inf) for t in labels]
    if apply_softmax:
        top = max(lps)
        exps = [math.exp(x - top) if x != -math.inf else 0.0 for x in lps]
        total = sum(exps)
        return [e / total for e in exps]
    return [math.exp(x) if x != -math.inf else 0.0 for x in lps]
