"""Summarise an nvidia-smi sample log (suite.sh `gpumon`): SM clock, power and temperature over
the samples where the GPU was busy, and how often each clock-limiting reason was active.

    python3 bench/gpu/gpumon.py gpumon.csv        # csv,nounits with a header line
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import Counter

# nvidia-smi's clocks_event_reasons bit mask (nvml.h: nvmlClocksEventReason*)
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap",
           0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal",
           0x80: "hw_power_brake", 0x100: "display_clocks"}


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile of values (0 <= q <= 1)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarise(path: str, busy_util: float = 50.0) -> str:
    with open(path, newline="") as f:
        raw = [{k.strip().split(" [")[0]: (v or "").strip() for k, v in r.items() if k}
               for r in csv.DictReader(f, skipinitialspace=True)]
    # nvidia-smi names its columns after the full field (clocks.sm -> clocks.current.sm)
    names = {"sm": ".sm", "power": "power.draw", "limit": "power.limit", "temp": "temperature",
             "util": "utilization.gpu", "reasons": "reasons"}
    header = list(raw[0]) if raw else []
    col = {short: next((h for h in header if part in h), None) for short, part in names.items()}
    rows = [{short: r.get(h, "") for short, h in col.items() if h} for r in raw]
    busy = []
    for r in rows:
        try:
            if float(r["util"]) >= busy_util:
                float(r["sm"]), float(r["power"]), float(r["temp"])
                busy.append(r)
        except (KeyError, ValueError):
            continue  # a line nvidia-smi could not fill
    if not busy:
        return f"{len(rows)} samples, none with utilization >= {busy_util:.0f}%"
    sm = [float(r["sm"]) for r in busy]
    power = [float(r["power"]) for r in busy]
    temp = [float(r["temp"]) for r in busy]
    lines = [f"{len(busy)} busy samples (utilization >= {busy_util:.0f}%) of {len(rows)}",
             f"SM clock MHz: p10 {quantile(sm, .1):.0f}  median {statistics.median(sm):.0f}  "
             f"p90 {quantile(sm, .9):.0f}  max {max(sm):.0f}",
             f"power W: median {statistics.median(power):.0f}  p90 {quantile(power, .9):.0f}  "
             f"max {max(power):.0f}  (limit {busy[0].get('limit', '?')})",
             f"temperature C: median {statistics.median(temp):.0f}  max {max(temp):.0f}"]
    key = "reasons" if "reasons" in busy[0] else None
    if key:
        counts: Counter[str] = Counter()
        for r in busy:
            try:
                mask = int(r[key], 16)
            except ValueError:
                continue
            for bit, name in REASONS.items():
                if mask & bit:
                    counts[name] += 1
        lines.append("clock limited by (share of busy samples): " + (", ".join(
            f"{name} {n / len(busy):.0%}" for name, n in counts.most_common()) or "nothing"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(sys.argv[1]))
