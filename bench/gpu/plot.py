"""One figure from the GPU result files: tokens/s and MFU by strategy and workload, one row per
machine. Usage: python bench/gpu/plot.py  (reads bench/results/gpu/*.json with "results")"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gpu"
ORDER = ["replicas", "peer", "collective", "tp", "ep_dp", "dwdp"]
LABELS = {"replicas": "full replicas (bound)", "peer": "AsyncEP peer",
          "collective": "AsyncEP collective", "tp": "SGLang TP", "ep_dp": "SGLang EP + DP attn",
          "dwdp": "SGLang DWDP"}


def rows() -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        doc = json.loads(path.read_text())
        for r in doc.get("results", []):
            if "tokens_per_s" not in r:
                continue
            layers = f"-{doc['num_layers']}L" if doc["model"].startswith("qwen3-235b") else ""
            gpus = r["gpus"]
            shape = "table-2 mix" if doc.get("workload") == "table2" else (
                f"{r['prompts']}x{r['prompt_len']}")
            out.append({"machine": f"{gpus}x {doc['hardware']['gpu']}",
                        "workload": f"{doc['model']}{layers}\n{shape}",
                        "strategy": r.get("strategy") or r["config"],
                        "tokens_per_s": r["tokens_per_s"], "mfu": r["mfu"]})
    return out


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
        strategies = [s for s in ORDER if any(r["strategy"] == s for r in mine)]
        width = 0.8 / len(strategies)
        for i, strategy in enumerate(strategies):
            for ax, key, scale in ((axes[row][0], "tokens_per_s", 1e3), (axes[row][1], "mfu", 0.01)):
                xs, ys = [], []
                for j, w in enumerate(workloads):
                    hit = [r[key] for r in mine if r["workload"] == w and r["strategy"] == strategy]
                    if hit:
                        xs.append(j + (i - (len(strategies) - 1) / 2) * width)
                        ys.append(hit[0] / scale)
                ax.bar(xs, ys, width, label=LABELS[strategy])
        for ax, label in ((axes[row][0], f"tokens/s (thousands), {machine}"),
                          (axes[row][1], f"MFU (%), {machine}")):
            ax.set_xticks(range(len(workloads)), workloads, fontsize=8)
            ax.set_ylabel(label, fontsize=9)
        axes[row][0].legend(fontsize=7)
    fig.suptitle("Prefill-only throughput, bf16, SGLang 0.5.17 (Triton attention), "
                 "MFU vs 989.4 TFLOP/s per GPU")
    fig.tight_layout()
    out = RESULTS / "prefill_gpu.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
