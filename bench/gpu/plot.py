"""One figure from the GPU result files: tokens/s and MFU by configuration and workload.
Usage: python bench/gpu/plot.py  (reads bench/results/gpu/asyncep_*.json)"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "gpu"


def rows() -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("asyncep_*.json")):
        doc = json.loads(path.read_text())
        for r in doc["results"]:
            if "tokens_per_s" in r:
                out.append({"workload": f"{doc['model']} {r['prompts']}x{r['prompt_len']}",
                            "config": r["config"], "tokens_per_s": r["tokens_per_s"],
                            "mfu": r["mfu"], "gpu": doc["hardware"]["gpu"]})
    return out


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows()
    workloads = sorted({r["workload"] for r in data})
    configs = ["replicas", "peer", "collective"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.25
    for i, config in enumerate(configs):
        for ax, key, scale in ((axes[0], "tokens_per_s", 1e3), (axes[1], "mfu", 0.01)):
            xs, ys = [], []
            for j, w in enumerate(workloads):
                hit = [r[key] for r in data if r["workload"] == w and r["config"] == config]
                if hit:
                    xs.append(j + (i - 1) * width)
                    ys.append(hit[0] / scale)
            ax.bar(xs, ys, width, label={"replicas": "4 full replicas (bound)",
                                          "peer": "AsyncEP peer",
                                          "collective": "AsyncEP collective"}[config])
    for ax, label in ((axes[0], "tokens/s (thousands), 4 GPUs"), (axes[1], "MFU (%)")):
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Prefill-only throughput, {data[0]['gpu']} x4, bf16, SGLang 0.5.17 kernels")
    fig.tight_layout()
    out = RESULTS / "asyncep_gpu.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
