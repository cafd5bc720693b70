"""Stage what the GPU machines lack, as carries of <= 56 MiB each (issue: GPU benchmarks).

The GPU image has Python 3.12, torch 2.11.0+cu130, triton 3.6.0, numpy, nvcc; it lacks SGLang and
most of its dependencies, and cannot download. This script, run here (CPU machine with PyPI):
  1. takes the exact package set of the CPU environment (`pip freeze` of .venv: SGLang 0.5.17's
     closure as we run it), drops what the image already has (torch, triton, CUDA libraries,
     numpy, ...) and adds the GPU-only packages (sglang-kernel, flashinfer-python);
  2. downloads each as a cp312 manylinux wheel (--no-deps: the set is already closed);
  3. cuts sglang-kernel to its sm_90 files (the full wheel is ~1 GB of other architectures) and
     its FlashAttention-3 library (SGLang's Hopper attention default, 1.07 GB) to the head-dim
     128 bf16 kernels (bench/gpu/trim_fa3.py), xz-compressed into its own carry .gpu-stage/fa3;
  4. builds our own wheel;
  5. packs the wheels a GPU step imports (not NOT_SERVED) into carry folders .gpu-stage/c1, c2,
     ... of at most 56 MiB each;
  6. copies what the router benchmark alone needs (smg and the router's dependencies) into one
     more carry, .gpu-stage/rcpu, so `suite.sh routercpu` runs in one call with no other stage.
On the device, bench/gpu/install.sh copies each carry to /tmp and installs them all.
Usage: .venv/bin/python bench/gpu/stage.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / ".gpu-stage"
# A call carries at most 64 MiB, the working tree included (4 MiB on 2026-12-07, when carries
# of 60 MiB stopped fitting): leave it 8.
CARRY_LIMIT = 56 << 20
# On the image already (torch's closure, CUDA, numpy, scipy, pillow, the HF hub), not imported
# when serving (plotting, outlines' data, IPython's completer), or ours.
IN_IMAGE = re.compile(
    r"^(torch|torchvision|torchaudio|triton|nvidia-(?!ml-py)|cuda-|numpy|sympy|mpmath|networkx|"
    r"jinja2|markupsafe|filelock|fsspec|setuptools|typing.extensions|pytest|pluggy|iniconfig|"
    r"scipy|pillow|huggingface.hub|hf.xet|matplotlib|fonttools|kiwisolver|contourpy|cycler|"
    r"pyparsing|pycountry|airportsdata|jedi|parso|moep|pip|sglang.router)\b", re.IGNORECASE)
# Not in the CPU environment (or only after `make bench-install`). Attention runs on fa3 (SGLang's
# Hopper default, staged below); FlashInfer is staged too (JIT: it compiles its kernels at first
# use).
GPU_ONLY = ["sglang==0.5.17", "sglang-kernel==0.4.5", "flashinfer-python==0.6.15.post1",
            "tabulate", "click",
            # SGLang's gateway, the router baseline (requirements/bench.txt), and its dependencies
            "smg==1.13.0", "grpcio", "grpcio-health-checking", "pyyaml", "setproctitle"]
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 38, 37, 36, 35, 34, 31, 28, 27, 24, 17)] + [
    "manylinux2014_x86_64", "manylinux1_x86_64"]
# bench/router_latency on the GPU host's CPUs (suite.sh routercpu): smg, moep_router's imports
# and theirs beyond the image (the tiny model is carried from .cache/models/tiny); of smg's own
# dependencies its launcher imports setproctitle, and over HTTP needs no gRPC or YAML
ROUTER_ONLY = {"smg", "setproctitle", "aiohappyeyeballs", "aiohttp", "aiosignal", "attrs",
               "frozenlist", "idna", "msgspec", "multidict", "orjson", "prometheus-client",
               "propcache", "psutil", "pyzmq", "tokenizers", "uvloop", "yarl", "httptools",
               "regex"}
# Staged for the CPU side's tools only, never imported by a GPU step: the gateway (the router
# benchmark's baseline, in rcpu), the manifest validator (CPU tests), the sampling profiler.
# Leaving them out of c1.. saves a 57-MiB staging call on every GPU session.
NOT_SERVED = {"smg", "kubernetes-validate", "py-spy"}
FA3_LIB = "flash_ops.abi3.so"
SM90_KEEP = re.compile(r"(^|/)(sm90|sm_90)(/|_)|\.py$|\.dist-info/|\.pyi$|\.typed$")


from bench.gpu.trim_fa3 import trim  # noqa: E402


def requirements() -> list[str]:
    freeze = subprocess.run([str(ROOT / ".venv/bin/pip"), "freeze"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    pinned = [line for line in freeze if "==" in line and not IN_IMAGE.match(line)]
    names = {line.split("==")[0].lower() for line in pinned}
    extra = [r for r in GPU_ONLY if re.split("[=<>]", r)[0].lower() not in names]
    return pinned + extra


def download(reqs: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        args += ["--platform", p]
    for req in reqs:  # one by one: a package with no cp312 wheel is reported, not fatal
        if subprocess.run(args + [req], capture_output=True).returncode:
            print(f"  no cp312 wheel: {req}")


def cut_to_sm90(wheel: Path) -> None:
    """Rewrite a kernel wheel keeping Python files, metadata and sm_90 binaries only."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if SM90_KEEP.search(item.filename) and "flash_ops" not in item.filename:
                dst.writestr(item, src.read(item.filename))
    tmp.replace(wheel)


def stage_fa3(kernel_wheel: Path) -> Path:
    """sgl_kernel/flash_ops.abi3.so of the full wheel, trimmed, as .gpu-stage/fa3/*.so.xz."""
    out = STAGE / "fa3" / f"{FA3_LIB}.xz"
    out.parent.mkdir(parents=True, exist_ok=True)
    raw, trimmed = out.parent / "full.so", out.parent / FA3_LIB
    with zipfile.ZipFile(kernel_wheel) as z:
        raw.write_bytes(z.read(f"sgl_kernel/{FA3_LIB}"))
    print(f"  fa3: {trim(raw, trimmed, {128}, {'bf16'})}")
    raw.unlink()
    subprocess.run(["xz", "-T0", "-6", "-f", str(trimmed)], check=True)
    return out


def pack(wheels: list[Path]) -> list[Path]:
    for old in STAGE.glob("c[0-9]*"):  # a previous staging's carries, maybe more of them
        shutil.rmtree(old)
    carries: list[Path] = []
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
        n = wheel.stat().st_size
        if n > CARRY_LIMIT:
            raise SystemExit(f"{wheel.name} is {n >> 20} MiB: over one carry")
        placed = False
        for carry in carries:  # first fit, largest first
            used = sum(f.stat().st_size for f in carry.iterdir())
            if used + n <= CARRY_LIMIT:
                shutil.copy2(wheel, carry)
                placed = True
                break
        if not placed:
            carry = STAGE / f"c{len(carries) + 1}"
            carry.mkdir(parents=True)
            shutil.copy2(wheel, carry)
            carries.append(carry)
    return carries


def package(wheel: Path) -> str:
    """The distribution's normalized name: py_spy-0.4.3-....whl -> py-spy."""
    return wheel.name.split("-")[0].lower().replace("_", "-")


def router_carry(wheels: list[Path]) -> Path:
    """.gpu-stage/rcpu: the ROUTER_ONLY wheels, one carry."""
    carry = STAGE / "rcpu"
    shutil.rmtree(carry, ignore_errors=True)
    carry.mkdir(parents=True)
    for wheel in wheels:
        if package(wheel) in ROUTER_ONLY:
            shutil.copy2(wheel, carry)
    if sum(f.stat().st_size for f in carry.iterdir()) > CARRY_LIMIT:
        raise SystemExit(f"{carry} is over one carry")
    return carry


def main() -> None:
    started = time.monotonic()
    wheels_dir = STAGE / "wheels"
    reqs = requirements()
    print(f"{len(reqs)} packages to stage")
    have = {package(w) for w in wheels_dir.glob("*.whl")}
    download([r for r in reqs if re.split("[=<>]", r)[0].lower().replace("_", "-") not in have],
             wheels_dir)
    for kernel in wheels_dir.glob("sglang_kernel-*.whl"):
        with zipfile.ZipFile(kernel) as z:
            full = f"sgl_kernel/{FA3_LIB}" in z.namelist()
        if full:  # a fresh download, not yet cut
            fa3 = stage_fa3(kernel)
            print(f"  {fa3.relative_to(ROOT)}: {fa3.stat().st_size / 2**20:.1f} MiB")
            cut_to_sm90(kernel)
    for old in wheels_dir.glob("moep_sglang-*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheels_dir), str(ROOT)], check=True)
    wheels = [w for w in sorted(wheels_dir.glob("*.whl"))
              if not IN_IMAGE.match(w.name.replace("_", "-")) or w.name.startswith("moep")]
    served = [w for w in wheels if package(w) not in NOT_SERVED]
    carries = [*pack(served), router_carry(wheels)]
    for carry in carries:
        size = sum(f.stat().st_size for f in carry.iterdir())
        print(f"  {carry.relative_to(ROOT)}: {len(list(carry.iterdir()))} wheels, {size / 2**20:.1f} MiB")
    print(f"staged in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
