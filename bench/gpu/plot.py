"""One figure of the GPU comparisons the README states: tokens/s and MFU by strategy and workload,
one row per machine, from the result files named in CURRENT (each with the variants it shows:
a variant that is now the launcher's default is drawn as the plain strategy).
Usage: python bench/gpu/plot.py"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gpu"
ORDER = ["sglang_default", "replicas", "peer", "collective", "tp", "ep_dp", "dwdp"]
LABELS = {"sglang_default": "plain SGLang, its defaults", "replicas": "ours, full replicas",
          "peer": "AsyncEP peer", "collective": "AsyncEP collective", "tp": "SGLang TP",
          "ep_dp": "SGLang EP + DP attn", "dwdp": "SGLang DWDP"}
# file -> {variant in the file: variant drawn}; "" is the strategy at its defaults. `nogrp`
# (MOEP_GROUPED_MOE=0) is the launcher's default since the grouped MoE went opt-in.
CURRENT: dict[str, dict[str, str]] = {
    "h100_30b_one_gpu_stq_rev.json": {"": ""},
    "h100_30b_table2_one_gpu_stq.json": {"": ""},
    "h100_235b12l_one_gpu.json": {"": ""},
    "h100_30b_one_gpu_stq_lp.json": {"": ""},  # scoring: two label logprobs per prompt
    "h100_30b_one_gpu_lp32k.json": {"": ""},
    "h200_30b_one_gpu.json": {"": ""},
    "h200_235b12l_one_gpu.json": {"": ""},
    "h200_30b_table2_one_gpu_rep_clocks.json": {"": ""},
    "h200x2_30b_4k.json": {"": ""},
    "h200x2_30b_32k.json": {"": ""},
    "h200x2_235b12l_4k.json": {"": ""},
    "asyncep_30b_4k_peer_replicas.json": {"": ""},
    "asyncep_30b_4k_collective.json": {"": ""},
    "asyncep_30b_32k_peer_replicas.json": {"": ""},
}


def rows(current: dict[str, dict[str, str]] = CURRENT) -> list[dict]:
    """One bar per (machine, workload, strategy, variant drawn) of the CURRENT files."""
    out = []
    for name, variants in current.items():
        doc = json.loads((RESULTS / name).read_text())
        for r in doc.get("results", []):
            variant = r.get("variant") or ""
            if "tokens_per_s" not in r or variant not in variants:
                continue
            layers = f"-{doc['num_layers']}L" if doc["model"].startswith("qwen3-235b") else ""
            shape = "table-2 mix" if doc.get("workload") == "table2" else (
                f"{r['prompts']}x{r['prompt_len']}")
            if doc.get("label_logprobs") and doc.get("workload") != "table2":
                shape += ", scoring"  # every prompt asked for label-token logprobs
            out.append({"machine": f"{r['gpus']}x {doc['hardware']['gpu']}",
                        "workload": f"{doc['model']}{layers}\n{shape}",
                        "strategy": r.get("strategy") or r["config"],
                        "variant": variants[variant], "tokens_per_s": r["tokens_per_s"],
                        "mfu": r["mfu"]})
    return out


def _series(data: list[dict]) -> list[tuple[str, str]]:
    keys = {(r["strategy"], r["variant"]) for r in data}
    return sorted(keys, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else 99, k[1]))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows()
    machines = sorted({r["machine"] for r in data}, reverse=True)
    fig, axes = plt.subplots(len(machines), 2, figsize=(13, 4 * len(machines)), squeeze=False)
    for row, machine in enumerate(machines):
        mine = [r for r in data if r["machine"] == machine]
        workloads = sorted({r["workload"] for r in mine})
        series = _series(mine)
        width = 0.8 / len(series)
        for i, (strategy, variant) in enumerate(series):
            label = LABELS.get(strategy, strategy) + (f" ({variant})" if variant else "")
            for ax, key, scale in ((axes[row][0], "tokens_per_s", 1e3), (axes[row][1], "mfu", 0.01)):
                xs, ys = [], []
                for j, w in enumerate(workloads):
                    hit = [r[key] for r in mine if r["workload"] == w and
                           (r["strategy"], r["variant"]) == (strategy, variant)]
                    if hit:
                        xs.append(j + (i - (len(series) - 1) / 2) * width)
                        ys.append(hit[0] / scale)
                ax.bar(xs, ys, width, label=label)
        for ax, label in ((axes[row][0], f"tokens/s (thousands), {machine}"),
                          (axes[row][1], f"MFU (%), {machine}")):
            ax.set_xticks(range(len(workloads)), workloads, fontsize=8)
            ax.set_ylabel(label, fontsize=9)
        axes[row][0].legend(fontsize=7)
    fig.suptitle("Prefill-only throughput, bf16, SGLang 0.5.17, MFU vs 989.4 TFLOP/s per GPU "
                 "(1 GPU: fa3 attention, H200 2026-12-03/04, H100 2026-12-06/07; 2 and 4 GPUs: "
                 "Triton attention, 2026-11-28)", fontsize=10)
    fig.tight_layout()
    out = RESULTS / "prefill_gpu.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
