"""Cut SGLang's FlashAttention-3 library (`sgl_kernel/flash_ops.abi3.so`, 1.07 GB) down to the
kernels Hopper serving of our model families runs, so it travels to the GPU machines (issue 11).

The library's `.nv_fatbin` section holds one fatbin container per compiled source file, each with
a cubin (an ELF of GPU code) per architecture: sm_80, sm_86, sm_90. On an H200 the runtime loads
only sm_90 cubins, and SGLang's prefill-only path calls only the forward kernels of its model's
head dim and dtype. Every other cubin is overwritten, in place and at the same size, with a small
valid cubin of the same architecture followed by zeros: no offset in the file moves, the library
still loads and registers every kernel, and the file compresses to a few MB (xz). A call of a
stubbed kernel fails loudly (CUDA "invalid device function"), never silently.

Kept: sm_90 cubins holding a `FlashAttnFwdSm90` kernel of a kept (head dim, dtype), and every
sm_90 cubin with no attention kernel in it (split-KV combine, scheduler metadata).
Usage: python bench/gpu/trim_fa3.py IN.so OUT.so [--head-dim 128 ...] [--dtype bf16 ...]
"""

from __future__ import annotations

import argparse
import re
import struct
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The Itanium-mangled element types of FA3's templates.
DTYPES = {"bf16": "S_10bfloat16_t", "fp16": "S_6half_t", "e4m3": "S_12float_e4m3_t"}
# CollectiveMainloopFwdSm90<Stages, ClusterShape, TileShape_MNK, kHeadDimV, Element, ...>:
# kHeadDimV is the int right before the element type.
MAINLOOP = re.compile(r"CollectiveMainloopFwdSm90.*?Li(\d+)EN(S_10bfloat16_t|S_6half_t|"
                      r"S_12float_e4m3_t)")
ATTENTION = re.compile(r"FlashAttn(Fwd|Bwd)Sm\d+")


@dataclass(frozen=True)
class Entry:
    """One cubin of a fatbin container: payload at [offset, offset + size) of the file."""
    header: int  # file offset of the entry header
    offset: int
    size: int
    arch: int  # 80, 86, 90


def _section(data: bytes | bytearray, wanted: str) -> tuple[int, int]:
    """(file offset, size) of an ELF section by name."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx][4]
    for name, _type, _flags, _addr, off, size in secs:
        if data[strtab + name:data.index(b"\0", strtab + name)].decode() == wanted:
            return off, size
    raise ValueError(f"no {wanted} section")


def fatbin_entries(data: bytes | bytearray) -> list[Entry]:
    start, size = _section(data, ".nv_fatbin")
    entries, pos, end = [], start, start + size
    while pos + 16 <= end:
        magic, _ver, header_size, fat_size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:  # containers are aligned: skip the padding
            pos += 8
            continue
        p = pos + header_size
        while p < pos + header_size + fat_size:
            _kind, _u, ehs, psize = struct.unpack_from("<HHIQ", data, p)
            arch = struct.unpack_from("<I", data, p + 28)[0]
            entries.append(Entry(p, p + ehs, psize, arch))
            p += ehs + psize
        pos += header_size + fat_size
    return entries


def cubin_of(data: bytes | bytearray, entry: Entry) -> bytes:
    raw = bytes(data[entry.offset:entry.offset + entry.size])
    if raw[:4] == ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def kernel_names(cubin: bytes) -> list[str]:
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx][4]
    names = [cubin[strtab + s[0]:cubin.index(b"\0", strtab + s[0])].decode() for s in secs]
    return [n[len(".text."):] for n in names if n.startswith(".text.")]


def needed(names: list[str], head_dims: set[int], dtypes: set[str]) -> bool:
    """Does an sm_90 cubin with these kernels serve a kept (head dim, dtype)?"""
    if not any(ATTENTION.search(n) for n in names):
        return True  # combine / scheduler helpers: small, kept
    for n in names:
        m = MAINLOOP.search(n)
        if m and int(m.group(1)) in head_dims and m.group(2) in dtypes:
            return True
    return False


def trim(src: Path, dst: Path, head_dims: set[int], dtypes: set[str]) -> dict:
    data = bytearray(src.read_bytes())
    entries = fatbin_entries(data)
    stub: dict[int, bytes] = {}  # arch -> smallest uncompressed cubin of that arch
    for e in entries:
        raw = data[e.offset:e.offset + 4]
        if raw == b"\x7fELF" and (e.arch not in stub or e.size < len(stub[e.arch])):
            stub[e.arch] = bytes(data[e.offset:e.offset + e.size])
    kept = kept_bytes = 0
    for e in entries:
        if e.arch == 90 and needed(kernel_names(cubin_of(data, e)), head_dims,
                                    {DTYPES[d] for d in dtypes}):
            kept += 1
            kept_bytes += e.size
            continue
        s = stub[e.arch]
        if len(s) > e.size:
            raise ValueError(f"stub of sm_{e.arch} is larger than the cubin at {e.offset:#x}")
        compressed = data[e.offset:e.offset + 4] == ZSTD_MAGIC
        if compressed:  # keep the entry's own framing: a compressed stub, zero padded
            import zstandard

            s = zstandard.ZstdCompressor().compress(s)
        data[e.offset:e.offset + e.size] = s + bytes(e.size - len(s))
    dst.write_bytes(data)
    return {"cubins": len(entries), "kept": kept, "kept_mib": round(kept_bytes / 2**20, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--head-dim", type=int, action="append", default=None)
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES), default=None)
    a = p.parse_args()
    print(trim(a.src, a.dst, set(a.head_dim or [128]), set(a.dtype or ["bf16"])))


if __name__ == "__main__":
    main()
