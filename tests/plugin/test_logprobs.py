"""The label-logprob hooks against SGLang's own functions: the mixed-batch fix (end to end in
tests/server/test_worker_tiny.py::test_generate_and_score_in_one_batch) and the gather without a
host-device synchronisation (that it does not synchronise: tests/gpu/test_kernels_gpu.py; every
worker test that scores runs it)."""

import pytest
import torch

from moep_sglang.plugin.logprobs import empty_rows_as_tensors, label_logprobs_without_sync


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


def _sglang_batch_fn():
    from sglang.srt.layers import logprob_processor as lp

    fn = lp.get_token_ids_logprobs_batch_optimized
    return getattr(fn, "__wrapped__", fn)


@pytest.mark.parametrize("ids", [
    [[3, 5], None, [7], []],  # rows without labels, as None and as []
    [[1], [1], [15, 0, 2]],  # repeated and unsorted ids, the last and first of the vocabulary
    [None, []],  # no labels at all
    [[4, 4, 9]],  # one request, a label twice
])
def test_gather_without_sync_returns_what_sglang_returns(ids):
    fn = _sglang_batch_fn()
    logprobs = torch.log_softmax(torch.randn(len(ids), 16), dim=-1)  # [batch, vocab]
    want_vals, want_ids = fn(logprobs, ids)
    vals, got_ids = label_logprobs_without_sync(fn, logprobs, ids)
    assert got_ids == want_ids
    assert len(vals) == len(want_vals)
    for v, w in zip(vals, want_vals):
        assert torch.is_tensor(v) and v.dtype == w.dtype and torch.equal(v, w)


def test_gather_without_sync_can_be_switched_off(monkeypatch):
    calls = []

    def original(logprobs, ids):
        calls.append(ids)
        return "sglang's"

    monkeypatch.setenv("MOEP_ASYNC_LABEL_LOGPROBS", "0")
    assert label_logprobs_without_sync(original, torch.zeros(1, 4), [[1]]) == "sglang's"
    monkeypatch.delenv("MOEP_ASYNC_LABEL_LOGPROBS")
    vals, _ = label_logprobs_without_sync(original, torch.zeros(1, 4), [[1]])
    assert calls == [[[1]]] and vals[0].tolist() == [0.0]


def test_gather_without_sync_refuses_ids_outside_the_vocabulary():
    logprobs = torch.log_softmax(torch.randn(2, 16), dim=-1)
    with pytest.raises(IndexError):
        label_logprobs_without_sync(_sglang_batch_fn(), logprobs, [[3], [16]])
