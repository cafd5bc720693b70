"""Plot the committed router comparisons: bench/results/routers.png.

    python -m bench.plot

One panel per measure (tokens/s: mean of the interleaved runs with their min-max as error bars;
cached tokens vs ideal), one group of bars per workload, one bar per system.
"""

from __future__ import annotations

import orjson

from bench.common import RESULTS

WORKLOADS = ("table2", "shared_prefix", "recommendation")


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = {w: orjson.loads(p.read_bytes()) for w in WORKLOADS
            if (p := RESULTS / f"compare_routers_{w}.json").exists()}
    docs = {w: d for w, d in docs.items() if "summary" in d}  # files with interleaved repeats
    if not docs:
        raise SystemExit("no compare_routers_*.json with a summary: run bench.compare_routers")
    systems = list(dict.fromkeys(s["system"] for d in docs.values() for s in d["summary"]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        xs, mean, low, high, cached = [], [], [], [], []
        for j, d in enumerate(docs.values()):
            row = next((s for s in d["summary"] if s["system"] == system), None)
            if row is None:
                continue
            xs.append(j + (i - (len(systems) - 1) / 2) * width)
            mean.append(row["tokens_per_s"])
            low.append(row["tokens_per_s"] - row["tokens_per_s_min"])
            high.append(row["tokens_per_s_max"] - row["tokens_per_s"])
            cached.append(100 * row["cached_vs_ideal"])
        label = f"moep-router {system}" if not system.startswith("smg") else system
        axes[0].bar(xs, mean, width, yerr=[low, high], capsize=3, label=label)
        axes[1].bar(xs, cached, width, label=label)
    for ax, title in zip(axes, ("prompt tokens/s (mean, min-max of runs)",
                                "cached tokens, % of ideal")):
        ax.set_xticks(range(len(docs)), list(docs))
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    first = next(iter(docs.values()))
    hw, cfg = first["hardware"], first["config"]
    fig.suptitle(f"{cfg['num_workers']} SGLang CPU workers ('{cfg['preset']}'), "
                 f"{cfg.get('repeats', 1)} interleaved runs per system, smg "
                 f"{cfg.get('smg_version')}, {hw['cores']} cores ({hw['cpu']}); "
                 f"git {first['git_sha'][:10]}", fontsize=9)
    fig.tight_layout()
    out = RESULTS / "routers.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
