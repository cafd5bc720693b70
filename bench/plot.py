"""Plot the committed router results: bench/results/routers.png.

    python -m bench.plot
"""

from __future__ import annotations

import orjson

from bench.common import RESULTS


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmp = orjson.loads((RESULTS / "compare_routers_table2.json").read_bytes())
    rows = cmp["rows"]
    names = [r["system"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = ["#1f77b4" if n == "true_flops" else "#7f7f7f" if n != "sglang_router"
              else "#d62728" for n in names]
    axes[0].bar(names, [r["tokens_per_s"] for r in rows], color=colors)
    axes[0].set_title("prompt tokens/s (higher is better)")
    axes[1].bar(names, [100 * r["cached_vs_ideal"] for r in rows], color=colors)
    axes[1].set_title("cached tokens, % of ideal")
    axes[2].bar(names, [r["flops_computed"] / 1e12 for r in rows], color=colors)
    axes[2].set_title("TFLOP computed (lower is better)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    cfg = cmp["config"]
    hw = cmp["hardware"]
    fig.suptitle(f"Table-2-shaped mix (scale {cfg['scale']}), {cfg['num_workers']} SGLang CPU "
                 f"workers, '{cfg['preset']}' model, {hw['cores']} cores ({hw['cpu']}); "
                 f"git {cmp['git_sha'][:10]}", fontsize=9)
    fig.tight_layout()
    out = RESULTS / "routers.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
