"""Label-token logprobs (what /v1/score and every router's scoring request ask for): two hooks.

1. Fix: a prefill batch that mixes scoring requests with plain requests crashes SGLang 0.5.17.
`get_token_ids_logprobs_raw(..., no_copy_to_cpu=True)` returns a tensor per request that asked
for label-token logprobs but a bare `[]` for one that did not (a /generate, SGLang's warmup);
`move_logprobs_to_cpu` then calls `.tolist()` on every entry and the scheduler dies with
"'list' object has no attribute 'tolist'". Reproduced on CPU by sending /generate and /v1/score
together (tests/plugin/test_logprobs.py). We return an empty tensor instead of `[]`.

2. Speed: the overlap scheduler launches batch N+1's forward, then processes batch N's results
while N+1 runs. For a prefill-only batch that asks for label-token logprobs, SGLang 0.5.17
gathers them inside the launch (`compute_logprobs_only` -> `get_token_ids_logprobs_batch_optimized`)
with `torch.tensor(..., device=cuda)` from pageable memory, `.sum().item()` and `.tolist()`:
each waits for the stream, so the host sits until N+1's forward has finished and only then
processes N and forms and launches N+2, while the GPU idles. We gather the same values with
host-side lengths and one pinned, non-blocking copy of the indices: no synchronisation
(`tests/gpu/test_kernels_gpu.py` runs it under `torch.cuda.set_sync_debug_mode("error")`).
MOEP_ASYNC_LABEL_LOGPROBS=0 keeps SGLang's function.
"""

from __future__ import annotations

import torch

from moep_sglang import envs


def empty_rows_as_tensors(original, logprobs, token_ids_logprobs_list, stage, *args, **kwargs):
    """AROUND logprob_processor.get_token_ids_logprobs_raw."""
    vals, idxs = original(logprobs, token_ids_logprobs_list, stage, *args, **kwargs)
    if kwargs.get("no_copy_to_cpu") or (len(args) > 1 and args[1]):
        vals = [v if torch.is_tensor(v) else logprobs.new_empty((0,)) for v in vals]
    return vals, idxs


def label_logprobs_without_sync(original, logprobs: torch.Tensor,
                                token_ids_logprobs: list[list[int] | None]):
    """AROUND logprob_processor.get_token_ids_logprobs_batch_optimized: the same
    (values, ids) per request, gathered without waiting for the GPU.
    logprobs [B, V]; token_ids_logprobs: B lists of label ids (None or [] for none) ->
    ([tensor [n_b] per request, empty where none], [ids or [] per request])."""
    if not envs.async_label_logprobs():
        return original(logprobs, token_ids_logprobs)
    lengths = [len(ids) if ids else 0 for ids in token_ids_logprobs]
    if not any(lengths):
        return ([logprobs.new_empty(0) for _ in token_ids_logprobs],
                [[] for _ in token_ids_logprobs])
    rows = [r for r, n in enumerate(lengths) for _ in range(n)]
    cols = [t for ids in token_ids_logprobs if ids for t in ids]
    # [2, n] row and column of every label: one pinned host tensor, copied without a wait
    index = torch.tensor([rows, cols], dtype=torch.long, pin_memory=logprobs.is_cuda)
    index = index.to(logprobs.device, non_blocking=True)
    gathered = logprobs[index[0], index[1]]  # [n]; an id outside the vocabulary fails as SGLang's
    parts = torch.split_with_sizes(gathered, lengths)
    values, ids_out = [], []
    for part, ids in zip(parts, token_ids_logprobs):
        values.append(part if ids else logprobs.new_empty(0))
        ids_out.append(ids if ids else [])
    return values, ids_out
