#!/usr/bin/env bash
# Build the Python environment that spark-submit.sh ships to YARN/standalone executors with
# --archives (conf key python.archive). The archive holds a relocatable virtualenv with lakeloop
# and its dependencies installed (not editable), made by venv-pack.
#   scripts/pack-env.sh [OUTPUT]        default OUTPUT: build/lakeloop-env.tar.gz
#   EXTRAS=spark35 scripts/pack-env.sh  the Spark 3.5 runtime for BigDL jobs (conf runtime.spark35.archive),
#                                       default OUTPUT: build/lakeloop-spark35-env.tar.gz
# The cluster hosts must have the same OS/CPU architecture and glibc as this machine, and the
# Python interpreter at the same path (venv-pack keeps the base interpreter as a symlink);
# use conda-pack or a pex (see docs/deploy.md) when they do not.
# Packages are installed at the versions of scripts/constraints.txt (those of .venv, the tested environment),
# with .venv's uv where ./setup.sh installed it (pip otherwise).
# pyspark (about 500 MB, its jars mostly) is left out: Spark puts its own pyspark.zip and py4j on the Python path
# of every driver and executor it starts (YARN ships them with the application), so the cluster's Spark, not a
# second copy, is what runs. KEEP_PYSPARK=1 keeps it. COMPRESS (0-9, default 1) is the gzip level: the archive is
# unpacked once per node, and a higher level costs more time to pack than it saves to upload.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${EXTRAS:-}" = "spark35" ]; then
  OUT=${1:-$ROOT/build/lakeloop-spark35-env.tar.gz}
else
  OUT=${1:-$ROOT/build/lakeloop-env.tar.gz}
fi
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m venv "$WORK/env"
install() {
  if [ -x "$ROOT/.venv/bin/uv" ]; then
    "$ROOT/.venv/bin/uv" pip install --quiet --python "$WORK/env/bin/python" "$@"
  else
    "$WORK/env/bin/python" -m pip install --quiet "$@"
  fi
}
"$WORK/env/bin/python" -m pip install --quiet --upgrade pip venv-pack
if [ "${EXTRAS:-}" = "spark35" ]; then
  "$ROOT/scripts/install-spark35.sh" "$WORK/env"
  "$WORK/env/bin/python" -m pip install --quiet --no-deps "$ROOT"
else
  install -c "$ROOT/scripts/constraints.txt" "$ROOT${EXTRAS:+[$EXTRAS]}"
  [ "${KEEP_PYSPARK:-0}" = 1 ] || "$WORK/env/bin/python" -m pip uninstall --quiet --yes pyspark
fi
mkdir -p "$(dirname "$OUT")"
tmp="$(dirname "$OUT")/.partial-$(basename "$OUT")"  # venv-pack wants a known extension
"$WORK/env/bin/venv-pack" -p "$WORK/env" -o "$tmp" --force --compress-level "${COMPRESS:-1}" --quiet
mv "$tmp" "$OUT"
key=python.archive; [ "${EXTRAS:-}" = "spark35" ] && key=runtime.spark35.archive
echo "pack-env: wrote $OUT ($(du -h "$OUT" | cut -f1)); set $key to it"
