#!/usr/bin/env bash
# bootstrap-kube.sh [tool...] — builds the pinned Kubernetes binaries (default: kube-apiserver,
# kube-controller-manager, kubectl) from the k8s.io/kubernetes Go module into the cache.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every k8s.io/X library
# with ./staging/src/k8s.io/X, and a dependency's replace lines do not apply. So a small
# wrapper module requires k8s.io/kubernetes and replaces each of those staging modules with
# its published k8s.io/X release of the same minor version (v1.33.0 -> v0.33.0), which is
# the same source. The first build takes a few minutes (kube-apiserver) on 2 cores.
source "$(dirname "$0")/lib.sh"
locked bootstrap-kube "$0" "$@"

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33.0}"
tools=("$@")
((${#tools[@]})) || tools=(kube-apiserver kube-controller-manager kubectl)

missing=()
for t in "${tools[@]}"; do
  if [[ -x "$BIN_DIR/$t-$KUBERNETES_VERSION" ]]; then
    ln -sf "$BIN_DIR/$t-$KUBERNETES_VERSION" "$BIN_DIR/$t"
  else
    missing+=("$t")
  fi
done
if ((${#missing[@]} == 0)); then
  say "kubernetes $KUBERNETES_VERSION: ${tools[*]} cached in $BIN_DIR"
  exit 0
fi

need go "Install Go >= 1.26 to build ${missing[*]}."
MOD="k8s.io/kubernetes@v$KUBERNETES_VERSION"
say "kubernetes $KUBERNETES_VERSION: go mod download $MOD"
GOMOD=$(go mod download -json "$MOD" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p') \
  || die "go mod download $MOD failed: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
[[ -f "$GOMOD" ]] || die "go mod download did not report the go.mod of $MOD"

# The staging libraries are published as k8s.io/X v0.<minor>.<patch>.
LIB_VERSION="v0.${KUBERNETES_VERSION#*.}"
MINOR=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
WRAP="$CACHE_DIR/src/kubernetes-$KUBERNETES_VERSION"
rm -rf "$WRAP"; mkdir -p "$WRAP"
{
  echo "module local.todo/kubernetes"
  echo
  echo "go $(awk '$1 == "go" { print $2; exit }' "$GOMOD")"
  echo
  echo "require k8s.io/kubernetes v$KUBERNETES_VERSION"
  echo
  awk -v v="$LIB_VERSION" '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print "replace " $1 " => " $1 " " v }' "$GOMOD"
} >"$WRAP/go.mod"
n=$(grep -c '^replace ' "$WRAP/go.mod") || true
((n > 0)) || die "found no ./staging/src replace lines in $GOMOD"
say "kubernetes $KUBERNETES_VERSION: wrapper module $WRAP ($n staging modules -> k8s.io/X $LIB_VERSION)"

for t in "${missing[@]}"; do
  say "kubernetes $KUBERNETES_VERSION: building $t (the first build takes minutes)"
  tstart=$(date +%s)
  (cd "$WRAP" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
     -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/client-go/pkg/version.gitVersion=v$KUBERNETES_VERSION" \
     -o "$BIN_DIR/$t-$KUBERNETES_VERSION.tmp" "k8s.io/kubernetes/cmd/$t") \
    || die "building $t from $MOD failed (see the Go output above)"
  mv "$BIN_DIR/$t-$KUBERNETES_VERSION.tmp" "$BIN_DIR/$t-$KUBERNETES_VERSION"
  ln -sf "$BIN_DIR/$t-$KUBERNETES_VERSION" "$BIN_DIR/$t"
  say "kubernetes $KUBERNETES_VERSION: built $t in $(( $(date +%s) - tstart )) s"
done
