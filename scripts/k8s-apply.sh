#!/usr/bin/env bash
# Applies every Kustomize overlay to a real Kubernetes API server, not only an offline
# validation: etcd (Debian's etcd-server) and kube-apiserver + kube-controller-manager
# (built from the k8s.io/kubernetes Go module by scripts/bootstrap-kube.sh, the Kubernetes
# version of kustomize/schemas/VERSIONS) on 127.0.0.1, with temporary certificates and data.
#
#   1. installs the CRDs of Dapr and KEDA (from their Go modules), of the Prometheus Operator
#      (PrometheusRule, PodMonitor) and of Strimzi (scripts/strimzi-crds.sh), the versions of
#      kustomize/schemas/VERSIONS;
#   2. per overlay: creates the Secrets a deployer must create (every Secret the overlay
#      refers to that neither the overlay nor an operator makes; placeholder values), then
#      `kubectl apply --server-side` the overlay and checks that every object was admitted
#      and reads back, and that no Pod template draws a Pod Security warning;
#   3. lets the controller manager turn every Deployment into a ReplicaSet and its Pods
#      (and the StatefulSet into Pods): the Pods pass admission too (they stay Pending:
#      there is no scheduler or kubelet);
#   4. deletes an earlier overlay's namespace first (prod and external share `todo`);
#   5. checks that README.md's "Secrets a deployer creates" names every such Secret.
# Everything it started is stopped at exit, also on failure.
#   bash scripts/k8s-apply.sh            all overlays
#   bash scripts/k8s-apply.sh dev prod   some
#   K8S_APPLY_KEEP=1 ...                 leave the last overlay applied and the servers
#                                        running until Enter is pressed (kubeconfig printed)
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
export PATH="$BIN_DIR:$PATH"
start=$(date +%s)
say() { printf '\033[1;34m[k8s-apply %3ss]\033[0m %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

SCHEMAS=kustomize/schemas
version() { sed -n "s/^$1=//p" "$SCHEMAS/VERSIONS"; }
KUBERNETES_VERSION=$(version KUBERNETES)
DAPR=$(version DAPR); KEDA=$(version KEDA); PROM=$(version PROMETHEUS_OPERATOR); STRIMZI=$(version STRIMZI)
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}" # as scripts/k8s-check.sh

need python3 "apt-get install python3 python3-yaml."
need openssl "apt-get install openssl."
if ! command -v etcd >/dev/null 2>&1; then
  need apt-get "etcd is not installed: install etcd (Debian's etcd-server)."
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  say "etcd: installing Debian's etcd-server"
  $SUDO apt-get update -qq || die "apt-get update failed: is the Debian mirror reachable?"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null || die "apt-get install etcd-server failed"
  $SUDO service etcd stop >/dev/null 2>&1 || true # the package may start one on 2379; ours is elsewhere
fi
KUBERNETES_VERSION=$KUBERNETES_VERSION bash scripts/bootstrap-kube.sh kube-apiserver kube-controller-manager kubectl
bash scripts/bootstrap-go-tool.sh kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
KUBECTL="$BIN_DIR/kubectl-$KUBERNETES_VERSION"
KUSTOMIZE="$BIN_DIR/kustomize-$KUSTOMIZE_VERSION"

gomod() { # gomod <module@version> -> its extracted directory in the module cache
  local dir
  dir=$(go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)",/\1/p') || true
  [[ -d "$dir" ]] || die "go mod download $1 failed: is the Go module proxy reachable?"
  echo "$dir"
}
need go "Install Go >= 1.26."
say "CRDs: Dapr $DAPR, KEDA $KEDA, Prometheus Operator $PROM (Go modules), Strimzi $STRIMZI (crd-generator)"
crds=()
DAPR_DIR=$(gomod "github.com/dapr/dapr@v$DAPR");                  crds+=("$DAPR_DIR"/charts/dapr/crds/*.yaml)
KEDA_DIR=$(gomod "github.com/kedacore/keda/v2@$KEDA");            crds+=("$KEDA_DIR"/config/crd/bases/*.yaml)
PROM_DIR=$(gomod "github.com/prometheus-operator/prometheus-operator@$PROM")
crds+=("$PROM_DIR"/example/prometheus-operator-crd/monitoring.coreos.com_{prometheusrules,podmonitors}.yaml)
STRIMZI_DIR=$(STRIMZI_VERSION="$STRIMZI" bash scripts/strimzi-crds.sh) || die "generating the Strimzi CRDs failed"
crds+=("$STRIMZI_DIR"/*.yaml)

if (($#)); then overlays=("$@"); else
  overlays=(); for d in kustomize/overlays/*/; do overlays+=("$(basename "$d")"); done
fi

# --- servers -----------------------------------------------------------------------------
# etcd's data on tmpfs when there is one: no fsync cost, nothing left behind.
if [[ -d /dev/shm && -w /dev/shm ]]; then T=$(mktemp -d -p /dev/shm todo-k8s.XXXXXX); else T=$(mktemp -d -t todo-k8s.XXXXXX); fi
pids=()
cleanup() {
  local rc=$?
  if ((rc != 0)); then # the servers' last words, before they are stopped
    for log in "$T"/kube-*.log; do
      [[ -f "$log" ]] && { echo "--- last error lines of $(basename "$log")" >&2; grep -a '^E' "$log" | tail -n 10 >&2 || true; }
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); ETCD_PEER_PORT=$(free_port); API_PORT=$(free_port)

say "certificates (openssl): a CA, the API server's serving certificate, the service-account key"
(
  cd "$T"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=todo-k8s-apply-ca -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n' >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  admin=$(openssl rand -hex 16); cm=$(openssl rand -hex 16)
  printf '%s,admin,admin,system:masters\n%s,system:kube-controller-manager,kube-controller-manager\n' "$admin" "$cm" >tokens.csv
  for who in admin:$admin cm:$cm; do
    cat >"${who%%:*}.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$T/ca.crt"}}]
users: [{name: u, user: {token: "${who#*:}"}}]
contexts: [{name: local, context: {cluster: local, user: u}}]
current-context: local
EOF
  done
) || die "openssl failed"
export KUBECONFIG="$T/admin.kubeconfig"
k() { "$KUBECTL" --request-timeout=60s "$@"; }

say "etcd $(etcd --version | sed -n 's/^etcd Version: //p') on 127.0.0.1:$ETCD_PORT"
etcd --name todo --data-dir "$T/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "todo=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn >"$T/etcd.log" 2>&1 &
pids+=($!)

say "kube-apiserver $KUBERNETES_VERSION on https://127.0.0.1:$API_PORT (RBAC, service-account tokens)"
kube-apiserver-"$KUBERNETES_VERSION" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$T/apiserver.crt" --tls-private-key-file "$T/apiserver.key" --client-ca-file "$T/ca.crt" \
  --token-auth-file "$T/tokens.csv" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$T/sa.pub" --service-account-signing-key-file "$T/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 --cert-dir "$T/certs" --profiling=false \
  >"$T/kube-apiserver.log" 2>&1 &
pids+=($!)
api_start=$(date +%s)
ready=""
for _ in $(seq 1 240); do
  kill -0 "${pids[-1]}" 2>/dev/null || die "kube-apiserver exited (its log is below)"
  if k get --raw /readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.5
done
[[ -n "$ready" ]] || die "kube-apiserver not ready after 120 s"
say "kube-apiserver ready after $(( $(date +%s) - api_start )) s: $(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"

say "kube-controller-manager $KUBERNETES_VERSION (Deployments -> ReplicaSets -> Pods, namespaces deleted)"
kube-controller-manager-"$KUBERNETES_VERSION" \
  --kubeconfig "$T/cm.kubeconfig" --secure-port 0 --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$T/sa.key" --root-ca-file "$T/ca.crt" \
  --cluster-signing-cert-file "$T/ca.crt" --cluster-signing-key-file "$T/ca.key" \
  >"$T/kube-controller-manager.log" 2>&1 &
pids+=($!)

say "installing ${#crds[@]} CRDs"
k apply --server-side --field-manager todo-k8s-apply $(printf -- '-f %s ' "${crds[@]}") -o name >/dev/null \
  || die "a CRD was refused (above)"
k wait --for condition=Established --timeout 60s crd --all >/dev/null || die "the CRDs did not become Established"

# --- overlays ----------------------------------------------------------------------------
summary=()
for o in "${overlays[@]}"; do
  [[ -f "kustomize/overlays/$o/kustomization.yaml" ]] || die "no overlay kustomize/overlays/$o"
  ostart=$(date +%s)
  "$KUSTOMIZE" build "kustomize/overlays/$o" >"$T/$o.yaml" || die "kustomize build kustomize/overlays/$o failed"
  # Split: the overlay's Namespaces, the Secrets a deployer must create, the expected names.
  python3 - "$T/$o.yaml" "$T/$o" <<'PY' || die "$o: could not work out the objects and Secrets"
import sys
import yaml

src, prefix = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
default_ns = next((d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"), "default")
defined = {(d["metadata"].get("namespace", default_ns), d["metadata"]["name"]) for d in docs if d["kind"] == "Secret"}
# Secrets the operators make: Strimzi's cluster CA and a Secret per KafkaUser.
made = set()
for d in docs:
    ns, name = d["metadata"].get("namespace", default_ns), d["metadata"]["name"]
    if d["kind"] == "Kafka":
        made |= {(ns, f"{name}-cluster-ca-cert"), (ns, f"{name}-clients-ca-cert"), (ns, f"{name}-cluster-ca"), (ns, f"{name}-clients-ca")}
    if d["kind"] == "KafkaUser":
        made.add((ns, name))

refs = {}  # (ns, name) -> {key: optional}
def ref(ns, name, key=None, optional=False):
    keys = refs.setdefault((ns, name), {})
    if key:
        keys[key] = keys.get(key, True) and bool(optional)

def pod_refs(ns, pod):
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    ann = meta.get("annotations", {}) or {}
    for a in ("dapr.io/app-token-secret", "dapr.io/api-token-secret"):
        if a in ann:
            ref(ns, ann[a], "token")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        for e in c.get("env", []) or []:
            s = (e.get("valueFrom") or {}).get("secretKeyRef")
            if s:  # optional keys too (todo-jwt: JWT_SECRET or JWT_PUBLIC_KEY)
                ref(ns, s["name"], s["key"], s.get("optional"))
        for e in c.get("envFrom", []) or []:
            s = e.get("secretRef")
            if s and not s.get("optional"):
                ref(ns, s["name"])
    for v in spec.get("volumes", []) or []:
        sources = [v] + [p for p in (v.get("projected") or {}).get("sources", [])]
        for s in sources:
            sec = s.get("secret")
            if sec and not sec.get("optional"):
                name = sec.get("secretName") or sec.get("name")
                ref(ns, name)
                for it in sec.get("items", []) or []:
                    ref(ns, name, it["key"])

for d in docs:
    ns, kind, spec = d["metadata"].get("namespace", default_ns), d["kind"], d.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        pod_refs(ns, spec["template"])
    elif kind == "Component" and d["apiVersion"].startswith("dapr.io/"):
        if (d.get("auth") or {}).get("secretStore", "kubernetes") == "kubernetes":
            for m in spec.get("metadata", []) or []:
                if "secretKeyRef" in m:
                    ref(ns, m["secretKeyRef"]["name"], m["secretKeyRef"].get("key") or m["secretKeyRef"]["name"])
    elif kind == "TriggerAuthentication":
        for t in spec.get("secretTargetRef", []) or []:
            ref(ns, t["name"], t["key"])

deployer = sorted(k for k in refs if k not in defined and k not in made)
with open(prefix + ".secrets.yaml", "w") as f:
    for ns, name in deployer:
        keys = sorted(refs[(ns, name)]) or ["placeholder"]  # optional keys get a value too
        yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": name, "namespace": ns,
                                     "labels": {"todo.example/created-by": "k8s-apply"}},
                        "stringData": {k: f"placeholder-{k}" for k in keys}}, f, explicit_start=True)
with open(prefix + ".namespaces.yaml", "w") as f:
    yaml.safe_dump_all([d for d in docs if d["kind"] == "Namespace"], f)
with open(prefix + ".namespaces", "w") as f:
    f.write("\n".join(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace") + "\n")
with open(prefix + ".expected", "w") as f:
    for d in docs:
        f.write(f'{d["kind"]}/{d["metadata"]["name"]}\n')
with open(prefix + ".deployer", "w") as f:
    # key? = an optional key (the app needs one of them)
    f.write(" ".join(f"{name}({','.join(k + ('?' if o else '') for k, o in sorted(refs[(ns, name)].items())) or '*'})"
                     for ns, name in deployer) + "\n")
with open(prefix + ".deployer-names", "w") as f:
    f.write("".join(f"{name}\n" for ns, name in deployer))
PY
  n_objects=$(wc -l <"$T/$o.expected")
  n_secrets=$(grep -c '^kind: Secret' "$T/$o.secrets.yaml" || true)
  say "$o: $n_objects objects; Secrets a deployer creates: $(grep . "$T/$o.deployer" || echo none)"

  # prod and external share the namespace `todo`: an earlier overlay's namespace goes first
  # (the controller manager's namespace controller deletes its contents).
  while read -r n; do
    [[ -n "$n" ]] && k get namespace "$n" >/dev/null 2>&1 || continue
    k delete namespace "$n" --wait=false >/dev/null
    k wait --for=delete "namespace/$n" --timeout 120s >/dev/null 2>&1 || die "$o: namespace $n of an earlier overlay was not deleted in 120 s"
  done <"$T/$o.namespaces"
  k apply --server-side --field-manager todo-k8s-apply -f "$T/$o.namespaces.yaml" -o name >/dev/null \
    || die "$o: a Namespace was refused (above)"
  if ((n_secrets)); then
    k apply --server-side --field-manager todo-deployer -f "$T/$o.secrets.yaml" -o name >"$T/$o.secrets.applied" \
      || die "$o: a deployer Secret was refused (above)"
  else : >"$T/$o.secrets.applied"; fi
  k apply --server-side --field-manager todo-k8s-apply -f "$T/$o.yaml" -o name >"$T/$o.applied" 2>"$T/$o.warnings" \
    || { cat "$T/$o.warnings" >&2; die "$o: the API server refused an object (above)"; }

  # Every object was admitted and reads back.
  python3 - "$T/$o.expected" "$T/$o.applied" <<'PY' || die "$o: objects missing from the API server's answer (above)"
import sys
expected = [l.strip() for l in open(sys.argv[1]) if l.strip()]
applied = [l.strip() for l in open(sys.argv[2]) if l.strip()]
# kubectl -o name prints <resource>.<group>/<name>; compare on kind (lower case) and name.
seen = set()
for l in applied:
    res, name = l.split("/", 1)
    seen.add((res.split(".", 1)[0], name))
missing = [e for e in expected if (e.split("/", 1)[0].lower(), e.split("/", 1)[1]) not in seen]
for m in missing:
    print(f"not admitted: {m}", file=sys.stderr)
sys.exit(1 if missing or len(applied) != len(expected) else 0)
PY
  n_read=$(k get -f "$T/$o.yaml" -o name | wc -l)
  ((n_read == n_objects)) || die "$o: $n_read of $n_objects objects read back"
  if grep -q . "$T/$o.warnings"; then
    cat "$T/$o.warnings" >&2
    die "$o: the API server warned (above): a Pod template misses the restricted Pod Security Standard, or a field is deprecated"
  fi

  # The controller manager makes each Deployment's ReplicaSet and Pods, and the StatefulSet's Pods.
  ns=$(head -n1 "$T/$o.namespaces")
  pods_ok=""
  for _ in $(seq 1 120); do
    if k get deployments,statefulsets -n "$ns" -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
sys.exit(0 if items and all(
    i["status"].get("observedGeneration", 0) >= i["metadata"]["generation"]
    and i["status"].get("replicas", 0) == i["spec"].get("replicas", 1) for i in items) else 1)'; then
      pods_ok=1; break
    fi
    sleep 0.5
  done
  n_deploy=$(k get deployments -n "$ns" -o name | wc -l)
  n_rs=$(k get replicasets -n "$ns" -o name | wc -l)
  n_pods=$(k get pods -n "$ns" -o name | wc -l)
  if [[ -z "$pods_ok" ]]; then
    k get deployments,statefulsets -n "$ns" >&2 || true
    k get events -n "$ns" --field-selector type=Warning 2>/dev/null | tail -n 20 >&2 || true
    die "$o: not every Deployment/StatefulSet got its Pods (above)"
  fi
  ((n_rs >= n_deploy)) || die "$o: $n_deploy Deployments but $n_rs ReplicaSets"
  line="$o: $n_objects objects + $n_secrets deployer Secrets admitted; $n_deploy Deployments -> $n_rs ReplicaSets, $n_pods Pods ($(( $(date +%s) - ostart )) s)"
  say "$line"; summary+=("$line")

  if [[ -n "${K8S_APPLY_KEEP:-}" && "$o" == "${overlays[-1]}" ]]; then
    say "kept: KUBECONFIG=$KUBECONFIG $KUBECTL get all -n $ns   (Enter stops the servers)"
    read -r _ || true
  fi
done

say "README.md: every Secret a deployer creates is listed under \"Secrets a deployer creates\""
cat "$T"/*.deployer-names | sort -u >"$T/deployer-names"
python3 - README.md "$T/deployer-names" <<'PY' || die "README.md does not list every Secret a deployer creates (above)"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^#+ Secrets a deployer creates\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
if not m:
    print("warning: README.md has no section 'Secrets a deployer creates'", file=sys.stderr)
    sys.exit(0)
missing = [n for n in open(sys.argv[2]).read().split() if f"`{n}`" not in m.group(1)]
for n in missing:
    print(f"README.md, Secrets a deployer creates: `{n}` is not listed", file=sys.stderr)
sys.exit(1 if missing else 0)
PY

say "k8s-apply passed in $(( $(date +%s) - start )) s (Kubernetes $KUBERNETES_VERSION):"
for l in "${summary[@]}"; do say "  $l"; done
