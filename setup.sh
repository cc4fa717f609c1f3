#!/usr/bin/env bash
# Create .venv and install lakeloop into it (editable). Safe to re-run: installs only when
# setup.cfg changed.   ./setup.sh         runtime dependencies
#                      ./setup.sh dev     + test/dev tools
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
