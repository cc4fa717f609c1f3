#!/usr/bin/env bash
# Install the Spark 3.5 side runtime's packages into the virtualenv VENV, in BigDL's two steps:
#   1. scripts/spark35-requirements.txt (pyspark 3.5.9, numpy<2.3, six, lakeloop's runtime dependencies)
#      and mlflow at MLFLOW_VERSION (default: the version in .venv, so both runtimes share one registry);
#   2. BigDL DLlib without dependencies (its metadata pins old pyspark/numpy).
# Then checks what the jobs rely on. Used by ./setup.sh spark35 and scripts/pack-env.sh (EXTRAS=spark35).
#   scripts/install-spark35.sh VENV
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$1
BIGDL="bigdl-dllib-spark3==2.4.0 bigdl-core==2.4.0.dev0"
if [ -z "${MLFLOW_VERSION:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
  MLFLOW_VERSION=$("$ROOT/.venv/bin/python" -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null || true)
fi
MLFLOW_VERSION=${MLFLOW_VERSION:-3.17.2}
# pip_install (setup.sh): uv where it can be installed, else pip; versions pinned by spark35-constraints.txt
if ! declare -F pip_install >/dev/null; then
  pip_install() { local venv=$1; shift; "$venv/bin/python" -m pip install --quiet "$@"; }
fi
pip_install "$VENV" -c "$ROOT/scripts/spark35-constraints.txt" -r "$ROOT/scripts/spark35-requirements.txt" \
  "mlflow==$MLFLOW_VERSION" "numpy<2.3"
# shellcheck disable=SC2086
pip_install "$VENV" --no-deps $BIGDL
"$VENV/bin/python" - <<'PYCHECK'
import numpy, pyspark
import bigdl.dllib.nncontext  # noqa: F401
from bigdl.dllib.utils.engine import get_bigdl_jars
assert pyspark.__version__.startswith("3.5."), f"pyspark {pyspark.__version__}, expected 3.5"
assert tuple(int(p) for p in numpy.__version__.split(".")[:2]) < (2, 3), f"numpy {numpy.__version__}, need < 2.3"
assert len(get_bigdl_jars()) == 2, f"BigDL jars: {get_bigdl_jars()}"
PYCHECK
echo "install-spark35: $VENV has pyspark 3.5, mlflow $MLFLOW_VERSION, $BIGDL"
