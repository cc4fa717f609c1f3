#!/usr/bin/env bash
# Run a lakeloop job with spark-submit, settings taken from conf/<env>.yaml (serve: a plain Python service).
#   ./spark-submit.sh JOB [--env ENV] [--set key=value ...] [--dry-run] [job args]
#   ./spark-submit.sh --help          ./spark-submit.sh JOB --help
# Exit codes: 0 ok, 1 error, 2 usage/conf error, 3 data-quality gate, 4 model gate refused.
# Everything is decided in lib/lakeloop/submit.py, which then execs spark-submit (or, in cluster deploy mode,
# waits for it and returns the job's own exit code).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PY=${LAKELOOP_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
export LAKELOOP_HOME="$ROOT"
exec "$PY" -m lakeloop.submit "$@"
