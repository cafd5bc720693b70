#!/usr/bin/env bash
# JIT kernel caches (Triton, FlashInfer, tvm-ffi; see env.sh) across GPU machines, which start bare.
#   bench/gpu/kcache.sh save      on the device: $MOEP_KCACHE -> $OUT/kcache.tgz.part-aa, -ab, ...
#                                 (15 MiB parts: the tool returns files of <= 16 MiB)
#   bench/gpu/kcache.sh restore   on the device: carried .gpu-stage/kcache/ -> $MOEP_KCACHE
# Here, keep the returned parts in .gpu-stage/kcache/ and carry that folder with a later call.
set -euo pipefail
KC=${MOEP_KCACHE:-/tmp/moep-kcache}
case "${1:-}" in
  save)
    tar czf - -C "$KC" . | split -b 15M - "$OUT/kcache.tgz.part-"
    echo "kernel cache: $(du -sh "$KC" | cut -f1) -> $(cat "$OUT"/kcache.tgz.part-* | wc -c) bytes" ;;
  restore)
    mkdir -p "$KC"
    if ls .gpu-stage/kcache/kcache.tgz.part-* >/dev/null 2>&1; then
      cat .gpu-stage/kcache/kcache.tgz.part-* | tar xzf - -C "$KC"
      echo "kernel cache restored: $(du -sh "$KC" | cut -f1)"
    else
      echo "no kernel cache carried"
    fi ;;
  *) echo "usage: $0 save|restore" >&2; exit 2 ;;
esac
