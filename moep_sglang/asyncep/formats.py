"""Which expert weight formats AsyncEP shards and gathers, and the message for the others.

Taken:
  - unquantized experts (bf16 / fp16 / fp32): `w13_weight` [E, 2I, H], `w2_weight` [E, H, I];
  - block FP8 with dynamic activation scales, the format Qwen and DeepSeek publish
    (`quant_method: fp8`, `weight_block_size: [128, 128]`): the FP8 weights plus their float32
    scales `w13_weight_scale_inv` [E, 2I/128, H/128] and `w2_weight_scale_inv` [E, H/128, I/128],
    sharded by expert like the weights and gathered with them.
Refused, naming the format: per-tensor FP8 (including `--quantization fp8` over a bf16 checkpoint),
static activation scales (SGLang folds them into one maximum over all experts, which a shard
cannot know), MXFP8 and FP4 experts, and every other quantization method.

Two checks of one rule: `check_checkpoint` in the launcher, from config.json and the flags, so
a bad start fails before SGLang loads anything; `check_expert_method` in the scheduler process,
on the MoE method SGLang actually built.
"""

from __future__ import annotations

from moep_sglang.asyncep.config import AsyncEPConfigError

TAKEN = ("unquantized (bf16, fp16, fp32)",
         "block FP8 with dynamic activations (quant_method fp8, weight_block_size)")


def _refuse(what: str) -> AsyncEPConfigError:
    return AsyncEPConfigError(
        f"AsyncEP cannot shard experts stored as {what}; it takes {' or '.join(TAKEN)}")


def check_checkpoint(quantization_config: dict | None, quantization_flag: str | None) -> str:
    """The expert format a worker will serve ("unquantized" | "fp8-block"), or the refusal.

    quantization_config: config.json's `quantization_config` (None: absent)
    quantization_flag:   SGLang's --quantization (None: not given)
    """
    if quantization_config is None:
        if quantization_flag in (None, ""):
            return "unquantized"
        if quantization_flag == "fp8":
            raise _refuse("per-tensor FP8 (--quantization fp8 over an unquantized checkpoint)")
        raise _refuse(f"{quantization_flag} (--quantization {quantization_flag})")
    method = str(quantization_config.get("quant_method", "")).lower()
    if method != "fp8":
        raise _refuse(f"{method or 'an unnamed quantization'} (quant_method in config.json)")
    if quantization_flag not in (None, "", "fp8"):
        raise _refuse(f"{quantization_flag} (--quantization {quantization_flag})")
    if quantization_config.get("activation_scheme", "dynamic") != "dynamic":
        raise _refuse("FP8 with static activation scales (activation_scheme "
                      f"{quantization_config.get('activation_scheme')!r})")
    if not quantization_config.get("weight_block_size"):
        raise _refuse("per-tensor FP8 (quant_method fp8 without weight_block_size)")
    if str(quantization_config.get("fmt", "e4m3")).lower() not in ("e4m3", "float8_e4m3fn"):
        raise _refuse(f"FP8 in format {quantization_config.get('fmt')!r}")
    return "fp8-block"


def check_expert_method(method) -> str:
    """The same rule on SGLang's MoE method object (UnquantizedFusedMoEMethod | Fp8MoEMethod)."""
    name = type(method).__name__
    if name == "UnquantizedFusedMoEMethod":
        return "unquantized"
    if name != "Fp8MoEMethod":
        raise _refuse(f"{name}")
    if getattr(method, "use_mxfp8", False):
        raise _refuse("MXFP8")
    if getattr(method, "is_fp4_expert", False):
        raise _refuse("FP4 (fp4 experts)")
    if not getattr(method, "block_quant", False):
        raise _refuse("per-tensor FP8")
    if method.quant_config.activation_scheme != "dynamic":
        raise _refuse("FP8 with static activation scales")
    return "fp8-block"
