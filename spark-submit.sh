#!/usr/bin/env bash
# Run a lakeloop job with spark-submit, settings taken from conf/<env>.yaml.
#   ./spark-submit.sh JOB [--env ENV] [--set key=value ...] [--dry-run] [job args]
# Exit codes: 0 ok, 1 error, 2 usage/conf error, 3 data-quality gate, 4 model gate refused.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PY=${LAKELOOP_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
export LAKELOOP_HOME="$ROOT"

check_java() {
  local java="java"
  [ -n "${JAVA_HOME:-}" ] && java="$JAVA_HOME/bin/java"
  if ! command -v "$java" >/dev/null 2>&1; then
    echo "spark-submit.sh: Java not found. lakeloop needs Java 17 or newer (e.g. apt install openjdk-17-jre-headless) on PATH or in JAVA_HOME." >&2
    exit 2
  fi
  local version major
  version=$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  major=${version%%.*}
  [ "$major" = "1" ] && major=$(echo "$version" | cut -d. -f2)
  if ! [ "$major" -ge 17 ] 2>/dev/null; then
    echo "spark-submit.sh: Java ${version:-unknown} found at $(command -v "$java"); Spark 4 needs Java 17 or newer." >&2
    exit 2
  fi
}

for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then exec "$PY" -m lakeloop.submit "$@"; fi
done

check_java
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$PY" -m lakeloop.submit --print0 "$@" >"$out" || exit $?
envs=()
cmd=()
seen_sep=0
while IFS= read -r -d '' part; do
  if [ $seen_sep = 0 ]; then
    if [ "$part" = "--" ]; then seen_sep=1; else envs+=("$part"); fi
  else
    cmd+=("$part")
  fi
done <"$out"
rm -f "$out"
trap - EXIT
exec env "${envs[@]}" "${cmd[@]}"
