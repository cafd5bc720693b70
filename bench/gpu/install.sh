#!/usr/bin/env bash
# On the GPU machine: copy the carried wheel folders into /tmp (which survives between calls on a
# warm machine; a carried folder does not), and with INSTALL=1 install them all into
# /tmp/moep-site, byte-compile it (the image does not write .pyc files, so every SGLang process
# compiled SGLang's sources again at start) and restore a carried kernel cache.
# Usage (repo root): bench/gpu/install.sh c1 c2 fa3 ...   then: INSTALL=1 bench/gpu/install.sh c3
# Afterwards: source bench/gpu/env.sh
set -euo pipefail
STAGE=/tmp/moep-stage
mkdir -p "$STAGE"
for c in "$@"; do
  cp -n .gpu-stage/"$c"/* "$STAGE"/
done
echo "staged: $(ls "$STAGE" | wc -l) wheels, $(du -sh "$STAGE" | cut -f1)"
if [ "${INSTALL:-0}" = "1" ]; then
  start=$(date +%s)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/moep-site "$STAGE"/*.whl
  for x in "$STAGE"/*.so.xz; do  # fa3, trimmed by stage.py, beside the rest of sgl_kernel
    [ -e "$x" ] && python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$x" "/tmp/moep-site/sgl_kernel/$(basename "$x" .xz)"
  done
  mid=$(date +%s)
  python3 -m compileall -q -j 0 /tmp/moep-site >/dev/null 2>&1 || true
  echo "installed into /tmp/moep-site in $(( mid - start )) s, byte-compiled in $(( $(date +%s) - mid )) s"
  source "$(dirname "$0")/env.sh"
  "$(dirname "$0")/kcache.sh" restore
fi
