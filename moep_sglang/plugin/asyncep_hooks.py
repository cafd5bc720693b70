"""SGLang hooks of AsyncEP and the prefill batching policy (registered only when enabled).

Each hook is thin: it finds the process's engine or policy in moep_sglang.asyncep and calls it.
"""

from __future__ import annotations

import time

from moep_sglang.asyncep import batcher, runtime
from moep_sglang.asyncep.group import AsyncEPPeerLost, exit_on_lost_peer


def shard_create_weights(original, method, *args, **kwargs):
    """AROUND UnquantizedFusedMoEMethod.create_weights and Fp8MoEMethod.create_weights: allocate
    this rank's E/N experts (and, for FP8, their scales)."""
    if args:  # SGLang passes every argument by keyword; keep positional calls working
        return original(method, *args, **kwargs)
    return original(method, **runtime.shard_create_weights(method, kwargs))


def setup_after_load(original, model_runner, *args, **kwargs):
    """AROUND ModelRunner.load_model: join the group and build the engine once weights are in."""
    result = original(model_runner, *args, **kwargs)
    if not getattr(model_runner, "is_draft_worker", False):
        runtime.setup(model_runner)
    return result


def begin_step(original, model_runner, forward_batch, *args, **kwargs):
    """AROUND ModelRunner.forward: start the ring's first K gathers before layer 0 computes."""
    eng = runtime.engine()
    if eng is None:
        return original(model_runner, forward_batch, *args, **kwargs)
    tokens, flops = _batch_work(forward_batch)
    try:
        eng.begin_step(flops, tokens)
        return original(model_runner, forward_batch, *args, **kwargs)
    except AsyncEPPeerLost as exc:  # a gather or the peer check failed mid-forward
        exit_on_lost_peer(exc)


def moe_with_gathered_experts(original, layer, *args, **kwargs):
    """AROUND FusedMoE.run_moe_core: compute over the full expert set assembled for this layer."""
    eng = runtime.engine()
    if eng is None or not eng.manages(layer):
        return original(layer, *args, **kwargs)
    eng.before_moe(layer)
    try:
        return original(layer, *args, **kwargs)
    finally:
        eng.after_moe(layer)


def lockstep(original, scheduler, *args, **kwargs):
    """AROUND Scheduler.get_next_batch_to_run: with the collective backend every rank agrees,
    once per step, whether anyone has work; a rank without work runs a gather-only step."""
    plan = original(scheduler, *args, **kwargs)
    eng = runtime.engine()
    if eng is None or not eng.backend.lockstep:
        return plan
    mine = plan.batch_to_run is not None
    try:
        anyone = eng.group.agree_any(mine)
        if anyone and not mine:
            eng.gather_only_step()
    except AsyncEPPeerLost as exc:
        exit_on_lost_peer(exc)
    if anyone:
        _idle.sleep_s = _IDLE_SLEEP_S[0]
    else:  # the whole group is idle: back off instead of spinning the agreement
        time.sleep(_idle.sleep_s)
        _idle.sleep_s = min(_idle.sleep_s * 2, _IDLE_SLEEP_S[1])
    return plan


_IDLE_SLEEP_S = (0.0005, 0.01)  # first and longest sleep of an idle lockstep group (s)


class _idle:
    sleep_s = _IDLE_SLEEP_S[0]


def one_step_per_batch(original, scheduler, batch, *args, **kwargs):
    """AROUND Scheduler.run_batch: a batch that ran no forward still runs its gathers, so the
    collective group never loses step with this rank."""
    eng = runtime.engine()
    if eng is None or not eng.backend.lockstep:
        return original(scheduler, batch, *args, **kwargs)
    before = eng.stats.steps + eng.stats.gather_only_steps
    result = original(scheduler, batch, *args, **kwargs)
    if eng.stats.steps + eng.stats.gather_only_steps == before:
        eng.gather_only_step()
    return result


def hold_until_saturated(original, scheduler, running_batch, *args, **kwargs):
    """AROUND Scheduler.get_new_batch_prefill: the prefill batching policy (hold below T)."""
    policy = batcher.policy()
    if policy.should_hold(scheduler, running_batch):
        from sglang.srt.managers.schedule_batch import NextBatchPlan

        return NextBatchPlan(batch_to_run=None, running_batch=running_batch)
    plan = original(scheduler, running_batch, *args, **kwargs)
    if plan.batch_to_run is not None:
        policy.record(plan.batch_to_run)
    return plan


def report_state(original, scheduler, *args, **kwargs):
    """AROUND Scheduler.get_internal_state: add `moep` (T, gather stats, weight bytes) to
    /server_info's internal_states, where the router reads T."""
    out = original(scheduler, *args, **kwargs)
    eng = runtime.engine()
    out.internal_state["moep"] = {
        "asyncep": eng.report() if eng is not None else None,
        "batching": batcher.policy().report(),
        "memory": runtime.memory_report(),
        "threshold_flops": batcher.policy().threshold(),
    }
    return out


def _batch_work(forward_batch) -> tuple[int, float]:
    """(tokens, FLOPs per layer) of a forward, from the cost model."""
    cost = runtime.cost_model()
    seqs = forward_batch.extend_seq_lens_cpu
    prefixes = forward_batch.extend_prefix_lens_cpu
    if cost is None or seqs is None:
        return forward_batch.batch_size, 0.0
    prefixes = prefixes or [0] * len(seqs)
    tokens = int(sum(seqs))
    flops = sum(cost.flops_per_layer(p + s, p) for s, p in zip(seqs, prefixes))
    return max(tokens, 1), flops
