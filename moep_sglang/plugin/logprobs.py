"""Fix: a prefill batch that mixes scoring requests with plain requests crashes SGLang 0.5.17.

`get_token_ids_logprobs_raw(..., no_copy_to_cpu=True)` returns a tensor per request that asked
for label-token logprobs but a bare `[]` for one that did not (a /generate, SGLang's warmup);
`move_logprobs_to_cpu` then calls `.tolist()` on every entry and the scheduler dies with
"'list' object has no attribute 'tolist'". Reproduced on CPU by sending /generate and /v1/score
together (tests/plugin/test_logprobs_fix.py). We return an empty tensor instead of `[]`.
"""

from __future__ import annotations


def empty_rows_as_tensors(original, logprobs, token_ids_logprobs_list, stage, *args, **kwargs):
    """AROUND logprob_processor.get_token_ids_logprobs_raw."""
    vals, idxs = original(logprobs, token_ids_logprobs_list, stage, *args, **kwargs)
    if kwargs.get("no_copy_to_cpu") or (len(args) > 1 and args[1]):
        import torch

        vals = [v if torch.is_tensor(v) else logprobs.new_empty((0,)) for v in vals]
    return vals, idxs
