"""Per-process AsyncEP state, built inside SGLang's scheduler process.

Order of events in a worker:
  1. model construction: `shard_create_weights` makes each routed FusedMoE allocate only this
     rank's E/N experts (the checkpoint loader then skips the others);
  2. after the weights are loaded: `setup` joins the group, shares the shards, allocates the
     ring, measures T and logs the weight bytes;
  3. serving: the engine is driven by the forward and scheduler hooks.
"""

from __future__ import annotations

import logging
from functools import cache

import torch

from moep_sglang import envs
from moep_sglang.asyncep import metrics
from moep_sglang.asyncep.config import AsyncEPConfig, AsyncEPConfigError, BatchingConfig
from moep_sglang.asyncep.formats import check_expert_method
from moep_sglang.asyncep.layout import ShardLayout

logger = logging.getLogger("moep_sglang.asyncep")


class _State:
    sharded_layers: list = []  # FusedMoE layers allocated as shards, in construction order
    engine = None  # GatherEngine once set up
    cost = None  # moep_router.cost.CostModel of the served model
    memory: dict = {}  # weight bytes report


_state = _State()


@cache
def asyncep_config() -> AsyncEPConfig | None:
    text = envs.asyncep_config_json()
    return AsyncEPConfig.from_json(text) if text else None


@cache
def batching_config() -> BatchingConfig | None:
    text = envs.batching_config_json()
    return BatchingConfig.from_json(text) if text else None


def engine():
    return _state.engine


def cost_model():
    return _state.cost


def memory_report() -> dict:
    return dict(_state.memory)


def shard_create_weights(method, kwargs: dict) -> dict:
    """create_weights kwargs for a routed FusedMoE under AsyncEP: allocate E/N experts."""
    config = asyncep_config()
    layer = kwargs["layer"]
    if config is None or getattr(layer, "is_shared_fused_moe", False):
        return kwargs
    try:
        check_expert_method(method)
    except AsyncEPConfigError as exc:
        raise SystemExit(f"moep-sglang: {exc}") from None
    if layer.num_fused_shared_experts or layer.moe_ep_size > 1 or layer.moe_tp_size > 1:
        raise SystemExit(
            "moep-sglang: AsyncEP replaces expert and tensor parallelism of the experts: start "
            "each worker with --tp-size 1 --ep-size 1 and without fused shared experts")
    layout = ShardLayout(layer.num_global_routed_experts, config.size, config.rank)
    layer._expert_storage_rank = config.rank  # the loader keeps experts of this range only
    layer._num_local_routed = layout.experts_per_rank
    layer.num_local_experts = layout.experts_per_rank
    _state.sharded_layers.append(layer)
    return {**kwargs, "num_experts": layout.experts_per_rank}


def setup(model_runner) -> None:
    """After the weights are loaded: cost model, and the AsyncEP group if enabled."""
    from moep_router.cost import CostModel
    from moep_router.model_spec import ModelSpec

    hf = model_runner.model_config.hf_config.to_dict()
    _state.cost = CostModel.from_spec(ModelSpec.from_config(hf))
    config = asyncep_config()
    if config is None:
        return
    if not _state.sharded_layers:
        quant = model_runner.model_config.quantization
        raise SystemExit(
            "moep-sglang: AsyncEP is enabled but no FusedMoE layer was sharded: the model has none"
            + (f", or its experts use {quant}, which AsyncEP does not take" if quant else ""))
    device = (torch.device("cpu") if model_runner.device == "cpu"
              else torch.device(model_runner.device, model_runner.gpu_id))
    _state.engine = _build_engine(config, model_runner.model, device,
                                  model_runner.model_config.dtype)
    _report_memory(config, model_runner.model)
    _state.engine.group.start_watchdog()


def _build_engine(config: AsyncEPConfig, model: torch.nn.Module, device: torch.device,
                  compute_dtype: torch.dtype):
    from moep_sglang.asyncep.backends import make_backend
    from moep_sglang.asyncep.engine import GatherEngine
    from moep_sglang.asyncep.group import AsyncEPGroup
    from moep_sglang.asyncep.ring import ExpertRing
    from moep_sglang.asyncep.shards import ShardStore
    from moep_sglang.asyncep.threshold import Threshold, measure_dense_rate, measure_gather

    layers = sorted(_state.sharded_layers, key=lambda l: l.layer_id)  # forward order
    shards = ShardStore(layers)
    group = AsyncEPGroup.join(config)
    backend = make_backend(config, group, shards, device)
    ring = ExpertRing(config.ring_slots, shards.spec(), config.size, device)
    forced = batching_config().min_batch_flops if batching_config() else None
    threshold = Threshold(0.0, 0.0, config.gamma, forced_flops=forced)
    eng = GatherEngine(config, group, shards, backend, ring, threshold, device)
    threshold.t_gather_s = measure_gather(eng.calibration_gather, device, config.calibration_iters)
    threshold.dense_flops_per_s = measure_dense_rate(
        device, compute_dtype, layers[0].hidden_size, config.calibration_iters,
        fp8=shards.spec()["w13_weight"][1] == torch.float8_e4m3fn)
    per_token = _state.cost.flops_per_layer(1) if _state.cost else 0
    logger.info(
        "AsyncEP rank %d/%d (%s): t_gather %.3f ms per layer, F %.3g FLOP/s, gamma %.2f -> "
        "T = %.3g FLOPs per layer (~%d prompt tokens per forward)%s", config.rank, config.size,
        config.backend, threshold.t_gather_s * 1e3, threshold.dense_flops_per_s, config.gamma,
        threshold.startup_flops, threshold.startup_flops / per_token if per_token else 0,
        f"; forced T = {forced:.3g}" if forced is not None else "")
    return eng


def _report_memory(config: AsyncEPConfig, model: torch.nn.Module) -> None:
    eng = _state.engine
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    shard = eng.shards.total_bytes
    full_experts = shard * config.size
    _state.memory = {
        "weight_bytes": weight_bytes,
        "expert_shard_bytes": shard,
        "expert_full_bytes": full_experts,
        "unsharded_weight_bytes": weight_bytes - shard + full_experts,
        "saved_bytes": full_experts - shard,
        "ring_bytes": eng.ring.total_bytes,
    }
    metrics.set_memory(weight_bytes, shard, eng.ring.total_bytes)
    mib = 1 << 20
    logger.info(
        "AsyncEP rank %d/%d: weights %.2f MiB (experts %.2f MiB = 1/%d of %.2f MiB; unsharded "
        "worker: %.2f MiB; saved %.2f MiB); gather ring %d x %.2f MiB = %.2f MiB",
        config.rank, config.size, weight_bytes / mib, shard / mib, config.size,
        full_experts / mib, _state.memory["unsharded_weight_bytes"] / mib,
        _state.memory["saved_bytes"] / mib, config.ring_slots,
        eng.ring.total_bytes / config.ring_slots / mib, eng.ring.total_bytes / mib)
