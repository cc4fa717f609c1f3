#!/usr/bin/env bash
# Create .venv and install lakeloop into it (editable). Safe to re-run: installs only when
# setup.cfg changed.   ./setup.sh         runtime dependencies
#                      ./setup.sh dev     + test/dev tools
#                      ./setup.sh spark35 the Spark 3.5 side runtime .venv-spark35 (BigDL; docs/bigdl.md)
#                      ./setup.sh jvm     the JVM connectors (delta-spark, Spark's Kafka connector, a Kafka
#                                         broker and a mini HDFS + YARN cluster for tests) fetched with
#                                         Apache Maven into jars/, and the
#                                         delta-spark runtime .venv-delta (docs/tables.md#delta-spark);
#                                         also run by ./setup.sh dev when mvn is installed
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

# pip_install VENV ARGS...: install into VENV with uv (parallel downloads; pinned, itself installed by pip),
# or with pip where uv cannot be installed. Package versions are pinned by the constraints files under scripts/
# (the tested environments; regenerate with `VENV/bin/python -m pip freeze --exclude-editable`).
UV_VERSION=0.13.9
pip_install() {
  local venv=$1; shift
  if [ -x "$venv/bin/uv" ] || "$venv/bin/python" -m pip install --quiet "uv==$UV_VERSION" >/dev/null 2>&1; then
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" "$@" && return 0
    echo "setup.sh: uv could not install $*; trying pip" >&2
  fi
  "$venv/bin/python" -m pip install --quiet "$@"
}
export -f pip_install
export UV_VERSION

# The Spark 3.5 side runtime (docs/bigdl.md), installed by scripts/install-spark35.sh; re-installed only when
# its requirements or the mlflow version of .venv changed.
setup_spark35() {
  local venv=.venv-spark35 mlflow_version=""
  if [ -x .venv/bin/python ]; then
    mlflow_version=$(.venv/bin/python -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null || true)
  fi
  local want
  want="$(cat scripts/spark35-requirements.txt scripts/spark35-constraints.txt scripts/install-spark35.sh | sha256sum | cut -c1-16) mlflow=${mlflow_version:-default}"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  if [ ! -f "$venv/.lakeloop-installed" ] || [ "$(cat "$venv/.lakeloop-installed")" != "$want" ]; then
    MLFLOW_VERSION=$mlflow_version scripts/install-spark35.sh "$venv"
    echo "$want" >"$venv/.lakeloop-installed"
  fi
  echo "setup.sh: Spark 3.5 runtime in $ROOT/$venv ($("$venv/bin/python" -c 'import pyspark, mlflow; print("pyspark", pyspark.__version__, "mlflow", mlflow.__version__)'), BigDL 2.4.0)"
}
if [ "$EXTRAS" = "spark35" ]; then
  setup_spark35
  exit 0
fi

# The JVM connectors, resolved by scripts/jvm/fetch.sh into jars/ (re-resolved only when a pom changed), and
# the delta-spark runtime .venv-delta: the pyspark the Delta jars are built for (jars/delta/versions.properties),
# installed without dependencies, over .venv's packages (lakeloop, deltalake, pyarrow, ...).
setup_jvm() {
  if [ ! -x .venv/bin/python ]; then
    echo "setup.sh: run ./setup.sh first (the JVM jars are resolved for .venv's pyspark)" >&2
    return 2
  fi
  scripts/jvm/fetch.sh .venv/bin/python "$ROOT/jars" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
  [ "${PIPESTATUS[0]}" = 0 ] || return 2
  local venv=.venv-delta version site want
  version=$(sed -n 's/^spark.version=//p' jars/delta/versions.properties)
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  want="pyspark==$version over $site"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  if [ ! -f "$venv/.lakeloop-installed" ] || [ "$(cat "$venv/.lakeloop-installed")" != "$want" ]; then
    pip_install "$venv" --no-deps "pyspark==$version"
    echo "import site; site.addsitedir('$site')" >"$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz-lakeloop-venv.pth"
    echo "$want" >"$venv/.lakeloop-installed"
  fi
  echo "setup.sh: JVM jars in $ROOT/jars, delta-spark runtime in $ROOT/$venv (pyspark $version)"
}
if [ "$EXTRAS" = "jvm" ]; then
  setup_jvm
  exit $?
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
spec="."
case "$EXTRAS" in
  "") ;;
  dev) spec=".[dev]" ;;
  *) spec=".[$EXTRAS]" ;;
esac
stamp=".venv/.lakeloop-installed"
want="$(cat setup.cfg pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16) $spec"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  pip_install .venv -c scripts/constraints.txt -e "$spec"
  echo "$want" >"$stamp"
fi
echo "setup.sh: lakeloop installed in $ROOT/.venv ($spec)"
if [ "$EXTRAS" = "dev" ]; then
  if command -v "${MVN:-mvn}" >/dev/null 2>&1; then
    setup_jvm || echo "setup.sh: the JVM jars could not be fetched; the tests that need them will skip (./setup.sh jvm)" >&2
  else
    echo "setup.sh: Apache Maven not found: no JVM connectors (delta-spark, Kafka); lakeloop uses the delta-rs bridge" >&2
  fi
fi
