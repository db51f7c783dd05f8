#!/usr/bin/env bash
# Build (once) and install the real Kubernetes control plane used by `make cluster-test`:
# kube-apiserver, kube-controller-manager and kube-scheduler from the official k8s.io/kubernetes
# Go module, plus etcd. Test infrastructure only: the product never runs these.
#
# How: a throwaway Go module requires k8s.io/kubernetes vX and replaces every k8s.io/* staging
# module named in kubernetes' own go.mod with its published v0.X release (the Go module proxy is
# the registry CI reaches). The binaries are built once per machine into a cache folder
# (SKILLMIX_TOOLS_CACHE, default ~/.cache/skillmix) and copied into .tools/k8s-vX/bin; a second
# run with both present does nothing. etcd comes from Debian's etcd-server (3.4) when apt-get can
# install it, otherwise it is built the same way from go.etcd.io/etcd/server/v3.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
here=$(cd "$(dirname "$0")/.." && pwd)
dest="${SKILLMIX_CONTROL_PLANE_DIR:-$here/.tools/k8s-$K8S_VERSION/bin}"
cache="${SKILLMIX_TOOLS_CACHE:-$HOME/.cache/skillmix}/k8s-$K8S_VERSION"
bins=(kube-apiserver kube-controller-manager kube-scheduler)

fail() { echo "install-control-plane: $*" >&2; exit 1; }

have_all() {
  local dir=$1
  for b in "${bins[@]}" etcd; do [[ -x "$dir/$b" ]] || return 1; done
}

if have_all "$dest"; then
  echo "control plane present: $dest ($("$dest/kube-apiserver" --version 2>/dev/null), etcd $("$dest/etcd" --version 2>/dev/null | head -1 | awk '{print $3}'))"
  exit 0
fi
case "$(uname -s)" in
  Linux) ;;
  *) fail "only Linux is supported (the control plane runs as local processes)" ;;
esac

build_kubernetes() {
  command -v go >/dev/null 2>&1 || fail "no Go toolchain on PATH: install Go >= 1.24 (https://go.dev/doc/install) and rerun 'make tools'"
  local minor=${K8S_VERSION#v1.}
  local staging="v0.$minor"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (once per machine: 5-15 min on 2 cores with a cold Go cache)"
  (
    cd "$work"
    cat >go.mod <<EOF
module skillmix.local/k8sbuild

go 1.24

require k8s.io/kubernetes $K8S_VERSION
EOF
    json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION") \
      || fail "could not download k8s.io/kubernetes@$K8S_VERSION (see the Go output above); check GOPROXY or the network and rerun 'make tools'"
    gomod=$(sed -n 's/.*"GoMod": "\(.*\)",*/\1/p' <<<"$json")
    [[ -f "$gomod" ]] || fail "could not download k8s.io/kubernetes@$K8S_VERSION (no go.mod in the answer); check GOPROXY and rerun 'make tools'"
    # Every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.MINOR`.
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod" | sort -u | while read -r mod; do
      go mod edit -replace "$mod=$mod@$staging"
    done
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    mkdir -p "$cache.tmp"
    for b in "${bins[@]}"; do
      CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ldflags" -o "$cache.tmp/$b" "k8s.io/kubernetes/cmd/$b" \
        || fail "building $b failed (see the Go output above); fix the toolchain or the network and rerun 'make tools'"
    done
  )
}

build_etcd() {
  command -v go >/dev/null 2>&1 || fail "no Go toolchain on PATH to build etcd: install Go or Debian's etcd-server"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "building etcd $ETCD_VERSION"
  (
    cd "$work"
    printf 'module skillmix.local/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
    CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$cache.tmp/etcd" go.etcd.io/etcd/server/v3 \
      || fail "building etcd failed (see the Go output above)"
  )
}

install_etcd() {
  if [[ -x /usr/bin/etcd ]]; then
    cp /usr/bin/etcd "$cache.tmp/etcd"
    return
  fi
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    if (apt-get install -y -qq etcd-server >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq etcd-server >/dev/null 2>&1; }) && [[ -x /usr/bin/etcd ]]; then
      # Debian starts a system etcd on 2379; our clusters use their own ports and data dirs.
      systemctl disable --now etcd >/dev/null 2>&1 || true
      cp /usr/bin/etcd "$cache.tmp/etcd"
      return
    fi
  fi
  build_etcd
}

if ! have_all "$cache"; then
  rm -rf "$cache.tmp"
  mkdir -p "$cache.tmp"
  for b in "${bins[@]}"; do [[ -x "$cache/$b" ]] && cp "$cache/$b" "$cache.tmp/$b"; done
  [[ -x "$cache.tmp/kube-apiserver" && -x "$cache.tmp/kube-controller-manager" && -x "$cache.tmp/kube-scheduler" ]] || build_kubernetes
  install_etcd
  rm -rf "$cache"
  mv "$cache.tmp" "$cache"
fi
mkdir -p "$dest"
for b in "${bins[@]}" etcd; do
  cp "$cache/$b" "$dest/$b.tmp"
  mv "$dest/$b.tmp" "$dest/$b"
done
echo "installed control plane $K8S_VERSION into $dest"
