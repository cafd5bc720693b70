#!/usr/bin/env bash
# On the GPU machine: copy the carried wheel folders into /tmp (which survives between calls on a
# warm machine; a carried folder does not), and with INSTALL=1 install them all into /tmp/moep-site.
# Usage (repo root): bench/gpu/install.sh c1 c2 ...   then: INSTALL=1 bench/gpu/install.sh c3
# Afterwards: export PYTHONPATH=/tmp/moep-site
set -euo pipefail
STAGE=/tmp/moep-stage
mkdir -p "$STAGE"
for c in "$@"; do
  cp -n .gpu-stage/"$c"/*.whl "$STAGE"/
done
echo "staged: $(ls "$STAGE" | wc -l) wheels, $(du -sh "$STAGE" | cut -f1)"
if [ "${INSTALL:-0}" = "1" ]; then
  start=$(date +%s)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/moep-site "$STAGE"/*.whl
  echo "installed into /tmp/moep-site in $(( $(date +%s) - start )) s"
fi
