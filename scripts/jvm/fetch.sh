#!/usr/bin/env bash
# Fetch the pinned JVM jars with Apache Maven (./setup.sh jvm runs this), one folder per pom:
#   jars/delta/         delta-spark and its transitive jars    } minus every artifact pyspark already bundles;
#   jars/kafka/         Spark's Kafka connector and its jars   } lakeloop.jvm puts them on Spark's classpath
#   jars/kafka-broker/  an Apache Kafka broker (KRaft) with its dependencies, for tests and benchmarks
#   jars/yarn-cluster/  Hadoop's mini HDFS + YARN cluster (hadoop-client-minicluster) for the YARN tests, with
#                       its launcher yarn-cluster/MiniCluster.java compiled into jars/yarn-cluster/classes (javac)
# Each folder is resolved again only when its pom (or the pyspark version) changed; versions.properties in
# it records the pom's pinned versions and the Spark lines the jars are loaded into.
#   scripts/jvm/fetch.sh PYTHON [JARS_DIR]     PYTHON: the interpreter whose pyspark the jars are for
# Without mvn (or Maven Central) this fails with a message; lakeloop then runs on the delta-rs bridge alone.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${1:?usage: fetch.sh PYTHON [JARS_DIR]}
JARS=${2:-$(cd "$HERE/../.." && pwd)/jars}
MVN=${MVN:-mvn}
MVN_FLAGS=(-q -B -Dstyle.color=never ${LAKELOOP_MVN_FLAGS:-})

if ! command -v "$MVN" >/dev/null 2>&1; then
  echo "fetch.sh: Apache Maven ($MVN) not found (apt install maven); or put the jars in $JARS by hand (docs/tables.md)" >&2
  exit 2
fi
spark_jars=$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
spark_version=$("$PY" -c 'import pyspark; print(pyspark.__version__)')

# artifactIds of the resolved runtime dependencies that pyspark's jars folder already holds (any version)
bundled_artifacts() {
  local listing=$1 gav artifact
  while read -r gav; do
    artifact=$(echo "$gav" | cut -d: -f2)
    if compgen -G "$spark_jars/$artifact-[0-9]*.jar" >/dev/null; then echo "$artifact"; fi
  done < <(sed -n 's/^ *\([^: ]*:[^: ]*:jar:[^ ]*\).*/\1/p' "$listing")
}

# versions.properties: the pom's pinned versions (spark.line, delta, spark.kafka) for lakeloop.jvm
pom_property() { sed -n "s:.*<$2>\(.*\)</$2>.*:\1:p" "$1" | head -n 1; }
write_versions() {
  echo "# resolved by scripts/jvm/fetch.sh from $(basename "$(dirname "$1")")/pom.xml"
  echo "spark.lines=$(pom_property "$1" spark.lines)"
  echo "spark.version=$(pom_property "$1" spark.version)"
  echo "delta.version=$(pom_property "$1" delta.version)"
  echo "kafka.version=$(pom_property "$1" kafka.version)"
  echo "hadoop.version=$(pom_property "$1" hadoop.version)"
}

# resolve POM_DIR into OUT (stamped with WANT); EXCLUDE_BUNDLED=1 drops what pyspark bundles
resolve() {
  local pom_dir=$1 out=$2 want=$3 exclude_bundled=$4
  if [ -f "$out/.resolved" ] && [ "$(cat "$out/.resolved")" = "$want" ]; then
    echo "fetch.sh: $out up to date ($(find "$out" -name '*.jar' | wc -l) jars)"
    return 0
  fi
  local tmp excludes=""
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  if [ "$exclude_bundled" = 1 ]; then
    "$MVN" "${MVN_FLAGS[@]}" -f "$pom_dir/pom.xml" dependency:list -DincludeScope=runtime \
      -DoutputFile="$tmp/list.txt" -DexcludeTransitive=false
    excludes=$(bundled_artifacts "$tmp/list.txt" | paste -sd, -)
  fi
  "$MVN" "${MVN_FLAGS[@]}" -f "$pom_dir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp/jars" ${excludes:+-DexcludeArtifactIds="$excludes"}
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  mv "$tmp/jars" "$out"
  write_versions "$pom_dir/pom.xml" >"$out/versions.properties"
  echo "$want" >"$out/.resolved"
  echo "fetch.sh: $(find "$out" -name '*.jar' | wc -l) jars in $out"
}

digest() { cat "$@" | sha256sum | cut -c1-16; }
for name in delta kafka; do
  resolve "$HERE/$name" "$JARS/$name" "$(digest "$HERE/$name/pom.xml" "$HERE/fetch.sh") pyspark=$spark_version" 1
done
resolve "$HERE/kafka-broker" "$JARS/kafka-broker" "$(digest "$HERE/kafka-broker/pom.xml" "$HERE/fetch.sh")" 0
resolve "$HERE/yarn-cluster" "$JARS/yarn-cluster" "$(digest "$HERE/yarn-cluster/pom.xml" "$HERE/fetch.sh")" 0
# the cluster's launcher, compiled against those jars (a JDK's javac, 17 or newer) when it is new or changed
if [ ! -f "$JARS/yarn-cluster/classes/MiniCluster.class" ] \
    || [ "$HERE/yarn-cluster/MiniCluster.java" -nt "$JARS/yarn-cluster/classes/MiniCluster.class" ]; then
  javac=javac; [ -n "${JAVA_HOME:-}" ] && javac="$JAVA_HOME/bin/javac"
  if ! command -v "$javac" >/dev/null 2>&1; then
    echo "fetch.sh: javac not found (a JDK, e.g. apt install openjdk-17-jdk-headless): the YARN tests will skip" >&2
    exit 0
  fi
  "$javac" -nowarn -d "$JARS/yarn-cluster/classes" -cp "$JARS/yarn-cluster/*" "$HERE/yarn-cluster/MiniCluster.java"
  echo "fetch.sh: compiled $JARS/yarn-cluster/classes/MiniCluster.class"
fi
