"""The mixed-batch logprob fix, against SGLang's own function (the end-to-end check is in
tests/server/test_worker_tiny.py::test_generate_and_score_in_one_batch)."""

import torch

from moep_sglang.plugin.logprobs import empty_rows_as_tensors


def _sglang_fn():
    from sglang.srt.layers import logprob_processor as lp

    fn = lp.get_token_ids_logprobs_raw
    return getattr(fn, "__wrapped__", fn), lp.LogprobStage.DECODE


def test_unfixed_sglang_returns_a_bare_list_for_rows_without_label_ids():
    fn, decode = _sglang_fn()
    logprobs = torch.log_softmax(torch.randn(2, 16), dim=-1)  # [batch, vocab]
    vals, _ = fn(logprobs, [[3, 5], None], decode, no_copy_to_cpu=True)
    assert torch.is_tensor(vals[0]) and vals[1] == []  # what crashed move_logprobs_to_cpu


def test_fixed_rows_are_all_tensors_and_values_unchanged():
    fn, decode = _sglang_fn()
    logprobs = torch.log_softmax(torch.randn(3, 16), dim=-1)  # [batch, vocab]
    ids = [[3, 5], None, [7]]
    vals, idxs = empty_rows_as_tensors(fn, logprobs, ids, decode, no_copy_to_cpu=True)
    assert [v.tolist() for v in vals] == [logprobs[0, [3, 5]].tolist(), [], [logprobs[2, 7].item()]]
    assert idxs == [[3, 5], [], [7]]


def test_copy_to_cpu_path_is_left_alone():
    fn, decode = _sglang_fn()
    logprobs = torch.log_softmax(torch.randn(2, 16), dim=-1)
    vals, _ = empty_rows_as_tensors(fn, logprobs, [[1], None], decode)
    assert vals == [[logprobs[0, 1].item()], []]
