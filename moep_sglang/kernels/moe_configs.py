"""Fused-MoE Triton configs tuned by bench/gpu/tune_moe.py, found before SGLang's own.

SGLang 0.5.17 looks its fused-MoE kernel configs up by file name
(`E=<experts>,N=<intermediate per rank>,device_name=<GPU>[,dtype=...][_down].json`) under
`configs/triton_<version>/`, falls back to other Triton versions' files and then to a generic
default tile. For Triton 3.6 it ships none for the H100 shapes of Qwen3-MoE, so prefill batches
ran with another Triton version's tiles (or the generic 64x64x32 tile for N=1536). We ship files
tuned on the GPU machines for prefill-sized batches and look them up first, in:
  1. $MOEP_MOE_CONFIG_DIR/triton_<version>/ (your own tuning output), then
  2. moep_sglang/kernels/configs/triton_<version>/ (ours).
MOEP_TUNED_MOE_CONFIGS=0 turns the lookup off (SGLang's own choice, for A/B runs).

SGLang 0.5.17 also reads an optional second file per shape, `..._down.json`: the down
projection's own tile and whether it loads through TMA (`USE_TMA`, Hopper tensor descriptors;
then the up projection writes its output expert-sorted so the down GEMM reads whole tiles).
Without one, both GEMMs run the up projection's tile without TMA. `tune_moe.py --down` tunes it;
MOEP_TUNED_MOE_DOWN=0 ignores only ours (A/B runs).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from moep_sglang import envs

logger = logging.getLogger("moep_sglang.kernels")

SHIPPED_DIR = Path(__file__).resolve().parent / "configs"


def version_dir(triton_version: str) -> str:
    """'3.6.0' -> 'triton_3_6_0' (SGLang's folder naming)."""
    return "triton_" + triton_version.replace(".", "_")


def search_dirs(triton_version: str) -> list[Path]:
    dirs = []
    extra = envs.moe_config_dir()
    if extra is not None:
        dirs.append(extra / version_dir(triton_version))
    dirs.append(SHIPPED_DIR / version_dir(triton_version))
    return dirs


@functools.lru_cache(maxsize=None)
def find_config(file_name: str, triton_version: str) -> dict[int, dict] | None:
    """The tuned {batch size M: kernel config} map for this file name, or None if none ships."""
    if not envs.tuned_moe_configs():
        return None
    if file_name.endswith("_down.json") and not envs.tuned_moe_down_configs():
        return None
    for folder in search_dirs(triton_version):
        path = folder / file_name
        if path.is_file():
            configs = {int(m): cfg for m, cfg in json.loads(path.read_text()).items()}
            logger.info("moep-sglang: fused-MoE kernel configs from %s", path)
            return configs
    return None
