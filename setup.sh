#!/usr/bin/env bash
# Create .venv and install lakeloop into it (editable). Safe to re-run: installs only when
# setup.cfg changed.   ./setup.sh         runtime dependencies
#                      ./setup.sh dev     + test/dev tools
#                      ./setup.sh spark35 the Spark 3.5 side runtime .venv-spark35 (BigDL; docs/bigdl.md)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
EXTRAS=${1:-}

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "setup.sh: Python 3.11 or newer is needed (found: $("$PY" --version 2>&1 || echo none))." >&2
  exit 2
fi
java="java"; [ -n "${JAVA_HOME:-}" ] && java="$JAVA_HOME/bin/java"
if ! command -v "$java" >/dev/null 2>&1; then
  echo "setup.sh: Java not found. Spark 4 needs Java 17 or newer (e.g. apt install openjdk-17-jre-headless)." >&2
  exit 2
fi
jv=$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
if ! [ "${jv%%.*}" -ge 17 ] 2>/dev/null; then
  echo "setup.sh: Java $jv found; Spark 4 needs Java 17 or newer." >&2
  exit 2
fi

# The Spark 3.5 side runtime, installed in two steps: its dependencies (scripts/spark35-requirements.txt,
# mlflow at the version of .venv), then BigDL without dependencies (its metadata pins old pyspark/numpy).
setup_spark35() {
  local venv=.venv-spark35 reqs=scripts/spark35-requirements.txt mlflow_pin="mlflow==3.17.2"
  if [ -x .venv/bin/python ]; then
    mlflow_pin="mlflow==$(.venv/bin/python -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null || echo 3.17.2)"
  fi
  local bigdl="bigdl-dllib-spark3==2.4.0 bigdl-core==2.4.0.dev0"
  local want
  want="$(cat "$reqs" | sha256sum | cut -c1-16) $mlflow_pin $bigdl"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  if [ ! -f "$venv/.lakeloop-installed" ] || [ "$(cat "$venv/.lakeloop-installed")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$reqs" "$mlflow_pin" "numpy<2.3"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --no-deps $bigdl
    "$venv/bin/python" - <<'PYCHECK'
import numpy, pyspark
import bigdl.dllib.nncontext  # noqa: F401
from bigdl.dllib.utils.engine import get_bigdl_jars
assert pyspark.__version__.startswith("3.5."), pyspark.__version__
assert tuple(int(p) for p in numpy.__version__.split(".")[:2]) < (2, 3), numpy.__version__
assert len(get_bigdl_jars()) == 2, get_bigdl_jars()
PYCHECK
    echo "$want" >"$venv/.lakeloop-installed"
  fi
  echo "setup.sh: Spark 3.5 runtime in $ROOT/$venv ($($venv/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)'), $mlflow_pin, BigDL 2.4.0)"
}
if [ "$EXTRAS" = "spark35" ]; then
  setup_spark35
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
spec="."
case "$EXTRAS" in
  "") ;;
  dev) spec=".[dev]" ;;
  *) spec=".[$EXTRAS]" ;;
esac
stamp=".venv/.lakeloop-installed"
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16) $spec"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$spec"
  echo "$want" >"$stamp"
fi
echo "setup.sh: lakeloop installed in $ROOT/.venv ($spec)"
