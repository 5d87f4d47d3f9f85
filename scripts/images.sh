#!/usr/bin/env bash
# OCI images of the services, built with buildah and without pulling anything: each is
# `FROM scratch` with the service's release binary, the glibc shared libraries `ldd` lists
# for it (and the loader), a passwd/group naming uid/gid 65532, and an empty /tmp.
#   bash scripts/images.sh build [service...]   build (all services/* by default)
#   bash scripts/images.sh test  [service...]   run each image's binary inside the image (--help)
#   bash scripts/images.sh list                 the images and their sizes
#
# Why glibc and not a static musl binary: only x86_64-unknown-linux-gnu's std is installed
# and rustup cannot download another here. Nothing else is needed at run time: TLS roots are
# compiled in (sqlx's rustls uses webpki-roots; no OpenSSL, no /etc/ssl), time zones too
# (chrono-tz embeds the IANA database; nothing reads /usr/share/zoneinfo or /etc/localtime),
# SQLite is bundled, and name resolution (hosts files + DNS) is built into glibc >= 2.34
# (no libnss_* to dlopen; Kubernetes mounts /etc/hosts and /etc/resolv.conf).
#
# Names and tags come from the dev overlay's `images:` (kustomize/overlays/dev/kustomization.yaml,
# todo/<service>:<newTag>), so the images built here are the ones that overlay deploys;
# IMAGE_TAG overrides the tag. An image is built from a commit, never from a working tree
# in the middle of an edit: IMAGE_REVISION (default HEAD) is checked out in a clone under
# ~/.cache/todo-dapr/images-src and built there into $IMAGES_TARGET_DIR (default
# ~/.cache/todo-dapr/images-target), outside this clone: an image build never races the
# target/release of `just up` or the tests, and the revision label is the commit built.
#
# buildah storage: vfs unless STORAGE_DRIVER says otherwise (works as root in a container
# without overlayfs); isolation chroot (no runc needed).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
export PATH="$BIN_DIR:$PATH"

if ! command -v buildah >/dev/null 2>&1; then
  need apt-get "buildah is not installed: install buildah (Debian's package)."
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  say "buildah: installing Debian's package"
  $SUDO apt-get update -qq || die "apt-get update failed: is the Debian mirror reachable?"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq buildah >/dev/null || die "apt-get install buildah failed"
fi
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
TARGET_DIR="${IMAGES_TARGET_DIR:-$CACHE_DIR/images-target}"
SRC_DIR="$CACHE_DIR/images-src"
OVERLAY=kustomize/overlays/dev/kustomization.yaml
# The uid/gid the manifests run as (runAsUser/runAsGroup: 65532, distroless's "nonroot").
UID_GID=65532

cmd="${1:-build}"; shift || true
REV=$(git rev-parse --verify "${IMAGE_REVISION:-HEAD}^{commit}") || die "no commit ${IMAGE_REVISION:-HEAD}"
# Every service crate of that commit (services/<name>/Cargo.toml), or those named.
if (($#)); then services=("$@"); else
  mapfile -t services < <(git ls-tree --name-only "$REV" services/ | while read -r d; do
    git cat-file -e "$REV:$d/Cargo.toml" 2>/dev/null && basename "$d"; done)
fi

# binary <service>: the crate's binary, named after it unless its Cargo.toml names another.
binary() {
  local b
  b=$(awk '/^\[\[bin\]\]/{inbin=1; next} inbin && /^name *=/{gsub(/[" ]/,"",$0); sub(/^name=/,"",$0); print; exit}' \
    <(git show "$REV:services/$1/Cargo.toml"))
  echo "${b:-$1}"
}

# image <service>: todo/<service>:<tag>, the tag from the dev overlay's images: entry.
image() {
  local tag="${IMAGE_TAG:-}"
  if [[ -z "$tag" ]]; then
    tag=$(python3 - "$OVERLAY" "todo/$1" <<'PY'
import sys, yaml
k = yaml.safe_load(open(sys.argv[1]))
print(next((i.get("newTag", "") for i in k.get("images", []) if i["name"] == sys.argv[2]), ""))
PY
)
    [[ -n "$tag" ]] || die "$OVERLAY has no images: entry for todo/$1 (add one with newTag)"
  fi
  echo "todo/$1:$tag"
}

# listen_addr <service>: the address its base ConfigMap gives it (APP_ADDR, or MCP_ADDR for
# mcp-server), so a container started outside Kubernetes listens on the same port.
listen_addr() {
  python3 - "$1" <<'PY'
import sys, yaml
k = yaml.safe_load(open("kustomize/base/kustomization.yaml"))
for g in k.get("configMapGenerator", []):
    if g["name"] == f"{sys.argv[1]}-config":
        env = dict(l.split("=", 1) for l in g.get("literals", []))
        print(env.get("APP_ADDR") or env.get("MCP_ADDR") or "")
PY
}

build() {
  local pkgs=() s
  for s in "${services[@]}"; do pkgs+=(-p "$s"); done
  local source revision created
  source="${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo "file://$PWD")}"
  revision="$REV"
  created=$(date -u +%FT%TZ)
  # The commit, in a clone of this repository outside it (checked out in place, so only the
  # files that changed since the last image build are rebuilt).
  [[ -d "$SRC_DIR/.git" ]] || git clone -q --no-checkout "$PWD" "$SRC_DIR"
  git -C "$SRC_DIR" fetch -q "$PWD" "$revision"
  git -C "$SRC_DIR" checkout -q --force --detach "$revision"
  for s in "${services[@]}"; do
    [[ -f "$SRC_DIR/services/$s/Cargo.toml" ]] || die "services/$s is not in commit $revision"
  done
  say "cargo build --release ${pkgs[*]} at $revision (in $SRC_DIR, target dir $TARGET_DIR)"
  (cd "$SRC_DIR" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked "${pkgs[@]}" --bins)
  local version
  version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)

  for s in "${services[@]}"; do
    local bin img addr port root lib ctr
    bin=$(binary "$s"); img=$(image "$s"); addr=$(listen_addr "$s"); port="${addr##*:}"
    [[ -x "$TARGET_DIR/release/$bin" ]] || die "$TARGET_DIR/release/$bin was not built"
    root=$(mktemp -d); trap 'rm -rf "$root"' RETURN
    install -D -m 0755 "$TARGET_DIR/release/$bin" "$root/usr/local/bin/$bin"
    # /usr/local/bin/service: one ENTRYPOINT whatever the binary is called (as docker/Dockerfile).
    ln -s "$bin" "$root/usr/local/bin/service"
    # Exactly the shared objects the dynamic loader will map, at the paths ldd resolved them
    # to, and the loader at the path written into the binary (PT_INTERP).
    for lib in $(ldd "$root/usr/local/bin/$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
    mkdir -p "$root/etc" "$root/tmp"; chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' "$UID_GID" "$UID_GID" >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:%s:\n' "$UID_GID" >"$root/etc/group"

    ctr=$(buildah from scratch)
    buildah copy --quiet "$ctr" "$root/" / >/dev/null
    local env=(--env LOG_FORMAT=json --env METRICS_ADDR=0.0.0.0:9464)
    local ports=(--port 9464)
    if [[ -n "$addr" ]]; then
      [[ "$s" == mcp-server ]] && env+=(--env "MCP_ADDR=0.0.0.0:$port") || env+=(--env "APP_ADDR=0.0.0.0:$port")
      ports+=(--port "$port")
    fi
    buildah config \
      --user "$UID_GID:$UID_GID" --workingdir /tmp \
      --entrypoint '["/usr/local/bin/service"]' --cmd '' \
      "${env[@]}" "${ports[@]}" \
      --label "org.opencontainers.image.title=$s" \
      --label "org.opencontainers.image.description=todo-dapr $s (Dapr app id $s, binary $bin)" \
      --label "org.opencontainers.image.source=$source" \
      --label "org.opencontainers.image.revision=$revision" \
      --label "org.opencontainers.image.version=$version" \
      --label "org.opencontainers.image.created=$created" \
      --label "org.opencontainers.image.licenses=Apache-2.0" \
      "$ctr"
    buildah commit --quiet --format oci --rm "$ctr" "$img" >/dev/null
    rm -rf "$root"; trap - RETURN
    say "$img: $(size "$img") ($bin, $(ldd "$TARGET_DIR/release/$bin" | grep -c '=> /') shared libraries + loader)"
  done
  list
}

# size <image>: its size as buildah reports it.
size() {
  buildah images --format '{{.Size}}' "$1" | head -1
}

list() {
  local s img
  printf '%-40s %-12s %s\n' IMAGE SIZE REVISION
  for s in "${services[@]}"; do
    img=$(image "$s")
    printf '%-40s %-12s %s\n' "$img" "$(size "$img" 2>/dev/null || echo missing)" \
      "$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$img" 2>/dev/null | head -c 48)"
  done
}

# test: each image's binary answers --help inside the image (its own root: no host library
# can stand in for a missing one), as the non-root user, and the image says what the
# manifests expect (user, entrypoint, labels).
test_images() {
  local s img bin mnt out failed=0
  for s in "${services[@]}"; do
    img=$(image "$s"); bin=$(binary "$s")
    buildah inspect --type image "$img" >/dev/null 2>&1 || die "$img is not built: run just images"
    local ctr
    ctr=$(buildah from --quiet "$img")
    # The command the Deployment runs (/usr/local/bin/<binary>), through the ENTRYPOINT's link too.
    if out=$(buildah run --isolation chroot --user "$UID_GID:$UID_GID" "$ctr" -- "/usr/local/bin/$bin" --help 2>&1) \
       && grep -qi "usage\|environment\|options" <<<"$out" \
       && buildah run --isolation chroot "$ctr" -- /usr/local/bin/service --help >/dev/null 2>&1; then
      local user labels
      user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$img")
      labels=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.source"}} {{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$img")
      if [[ "$user" != "$UID_GID:$UID_GID" || "$labels" == *"<no value>"* || "$labels" == " " ]]; then
        say "FAIL $img: user '$user', labels '$labels'"; failed=1
      else
        say "ok   $img: /usr/local/bin/$bin --help as $user ($(wc -l <<<"$out") lines), source+revision labels"
      fi
    else
      say "FAIL $img: /usr/local/bin/$bin --help inside the image:"; printf '%s\n' "$out" | tail -20 >&2; failed=1
    fi
    buildah rm "$ctr" >/dev/null
  done
  ((failed == 0)) || die "an image failed its test (above)"
}

case "$cmd" in
  build) build ;;
  test) test_images ;;
  list) list ;;
  *) die "usage: scripts/images.sh build|test|list [service...]" ;;
esac
