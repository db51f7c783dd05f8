#!/usr/bin/env bash
# Build (once) and install Kueue for the cluster tests: the `kueue` manager binary built from the
# official sigs.k8s.io/kueue Go module, plus its CRDs and webhook manifests from the same module.
# Test infrastructure only: the product never runs it. The tests start it as a process against
# the test control plane, webhooks registered by URL on loopback (tests/cluster/kueue.py).
#
# Pinned: KUEUE_VERSION (default v0.17.0). Cached per machine in SKILLMIX_TOOLS_CACHE (default
# ~/.cache/skillmix/kueue-VERSION) and copied to .tools/kueue-VERSION/{bin,crds,webhook}; a second
# run with both present does nothing. Cold: about 11 minutes on 2 busy cores.
set -euo pipefail
KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}
here=$(cd "$(dirname "$0")/.." && pwd)
dest="${SKILLMIX_KUEUE_DIR:-$here/.tools/kueue-$KUEUE_VERSION}"
cache="${SKILLMIX_TOOLS_CACHE:-$HOME/.cache/skillmix}/kueue-$KUEUE_VERSION"

fail() { echo "install-kueue: $*" >&2; exit 1; }

complete() {
  local dir=$1
  [[ -x "$dir/bin/kueue" && -f "$dir/webhook/manifests.yaml" ]] && compgen -G "$dir/crds/*.yaml" >/dev/null
}

if complete "$dest"; then
  echo "kueue present: $dest ($KUEUE_VERSION)"
  exit 0
fi

# One build per machine at a time: a second `make tools` (another checkout, another agent) waits
# for the first instead of racing it on "$cache.tmp", then finds the cache complete.
mkdir -p "$(dirname "$cache")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache.lock"
  flock -w 3600 9 || fail "another install-kueue.sh held $cache.lock for an hour; remove it if no build is running"
fi

if ! complete "$cache"; then
  # sigs.k8s.io/kueue v0.17 declares `go 1.25.0`: an older go fetches that toolchain itself
  # (GOTOOLCHAIN=auto, from the module proxy) or, with GOTOOLCHAIN=local, fails in `go get`.
  command -v go >/dev/null 2>&1 || fail "no Go toolchain on PATH: install Go >= 1.25 and rerun 'make tools'"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building kueue $KUEUE_VERSION (once per machine: about 11 min on 2 cores with a cold Go cache)"
  rm -rf "$cache.tmp"
  mkdir -p "$cache.tmp/bin" "$cache.tmp/crds" "$cache.tmp/webhook"
  (
    cd "$work"
    printf 'module skillmix.local/kueuebuild\n\ngo 1.24\n' >go.mod
    go get "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" \
      || fail "could not download sigs.k8s.io/kueue@$KUEUE_VERSION (see the Go output above); check GOPROXY and rerun 'make tools'"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
      -o "$cache.tmp/bin/kueue" sigs.k8s.io/kueue/cmd/kueue \
      || fail "building kueue failed (see the Go output above)"
    src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
    [[ -d "$src/config/components/crd/bases" ]] || fail "no CRDs in $src/config/components/crd/bases"
    cp "$src"/config/components/crd/bases/*.yaml "$cache.tmp/crds/"
    cp "$src/config/components/webhook/manifests.yaml" "$cache.tmp/webhook/manifests.yaml"
  )
  chmod -R u+w "$cache.tmp"
  rm -rf "$cache"
  mv "$cache.tmp" "$cache"
fi
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
cp -r "$cache" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "installed kueue $KUEUE_VERSION into $dest"
