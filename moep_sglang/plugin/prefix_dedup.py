"""In-batch prefix deduplication: one prompt of a group computes the shared prefix, the others
wait one step and read it from the radix cache.

SGLang matches each waiting prompt against the radix cache when it forms a prefill batch, but
prompts admitted into the same batch cannot see each other: a batch that takes k prompts of one
group before their shared prefix is cached computes that prefix k times. SGLang's own in-batch
check only reorders the queue and only under the `lpm` policy with at most 128 waiting (the
default `fcfs` has none), so with large batches the loss is large: on the Table-2-shaped mix on
one H200, 32K-token batches got 77% of the ideal cached tokens where 8K chunks got 100%
(bench/results/gpu/h200_30b_table2_one_gpu*.json).

Rule. A prompt r whose radix match ends at m_r (tokens already cached) is described by its
window key

    key(r) = (extra_key(r), m_r, ids(r)[m_r : m_r + W])        (only when |ids(r)| - m_r >= W)

When the adder is offered r and some other prompt c holds a *live* claim on key(r) (c was
admitted with that key and its KV is not in the radix cache yet), r is skipped for this batch
(`AddReqResult.CONTINUE`: it stays in the waiting queue, in its place, and the adder goes on
with the next prompt); otherwise r is admitted as SGLang decides and, if admitted, claims its
key. Two prompts with equal keys share at least m + W tokens, so every prompt skipped saves at
least W tokens of prefill once c's KV lands. A claim is live while its holder has neither
finished nor produced an output token (its prompt's KV is inserted into the tree when its
prefill's result is processed, which with overlap scheduling is after the next batch is formed:
this is why the claim outlives the batch that admitted it). A chunked prompt re-claims at each
chunk under its new m (SGLang caches each finished chunk), so prompts that share its tail keep
waiting for it and prompts that share only its cached head do not.

A skipped prompt waits at most until its claimant's prefill ends; no prompt is ever dropped.
W = 32 tokens (SGLang's own in-batch threshold). `MOEP_PREFIX_DEDUP=0` turns the rule off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

WINDOW = 32  # tokens of the window after the cached prefix (W)
_PRUNE_EVERY = 64  # claims added between sweeps of dead claims (bounds what they retain)


def window_key(req) -> tuple | None:
    """key(r) at r's current radix match, or None when fewer than W uncached tokens remain."""
    ids = req.origin_input_ids
    m = len(req.prefix_indices)
    if len(ids) - m < WINDOW:
        return None
    return (req.extra_key, m, tuple(ids[m:m + WINDOW]))


def claim_live(req) -> bool:
    """Whether req's prompt KV is still on its way into the radix cache."""
    return not req.finished() and not req.output_ids


@dataclass
class PrefixDedup:
    """The live claims of one scheduler process (key -> the prompt that computes it)."""

    claims: dict[tuple, object] = field(default_factory=dict)
    skipped: int = 0  # prompts skipped for a batch (one count per skip)
    _added_since_prune: int = 0

    def holder(self, req) -> object | None:
        """The other prompt holding a live claim on req's key, if any (drops a dead claim)."""
        key = window_key(req)
        if key is None:
            return None
        c = self.claims.get(key)
        if c is None or c is req:
            return None
        if not claim_live(c):
            del self.claims[key]
            return None
        return c

    def should_skip(self, req) -> bool:
        if self.holder(req) is None:
            return False
        self.skipped += 1
        return True

    def claim(self, req) -> None:
        """req was admitted (or continues as the chunked prompt): it computes its window."""
        key = window_key(req)
        if key is None:
            return
        self.claims[key] = req
        self._added_since_prune += 1
        if self._added_since_prune >= _PRUNE_EVERY:
            self.prune()

    def prune(self) -> None:
        self.claims = {k: c for k, c in self.claims.items() if claim_live(c)}
        self._added_since_prune = 0


_dedup = PrefixDedup()


@cache
def _enabled() -> bool:
    from moep_sglang import envs

    return envs.prefix_dedup()


def _applies(adder) -> bool:
    tree = adder.tree_cache
    return _enabled() and tree.is_tree_cache() and not getattr(tree, "disable", False)


def skip_shared_prefix(original, adder, req, *args, **kwargs):
    """AROUND PrefillAdder.add_one_req: skip a prompt whose uncached window another admitted
    prompt is computing; claim the window of a prompt admitted."""
    # A full running batch here means SGLang just preempted lower-priority work to make room
    # for req (priority preemption): admit it as SGLang decided.
    running = adder.running_batch
    if not _applies(adder) or (running is not None and running.batch_is_full):
        return original(adder, req, *args, **kwargs)
    if _dedup.should_skip(req):
        from sglang.srt.managers.schedule_policy import AddReqResult

        return AddReqResult.CONTINUE
    result = original(adder, req, *args, **kwargs)
    _claim_if_admitted(adder, req)
    return result


def reclaim_chunk(original, adder, req, *args, **kwargs):
    """AROUND PrefillAdder.add_chunked_req: the chunked prompt claims its next window."""
    result = original(adder, req, *args, **kwargs)
    if _applies(adder):
        _claim_if_admitted(adder, req)
    return result


def _claim_if_admitted(adder, req) -> None:
    """The adder admitted req into this batch (it is the last of its run list): claim."""
    if adder.can_run_list and adder.can_run_list[-1] is req:
        _dedup.claim(req)
