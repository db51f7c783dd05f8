#!/usr/bin/env bash
# podman with this project's settings, for every podman call in scripts/ and the tests.
#
# Why: podman's defaults fail on the development machine (crun: "cgroups in hybrid mode not
# supported"; the default nofile limit is above the host's hard limit) and its storage would be
# shared with anything else on the machine. Here it runs with runc, lowered ulimits, and storage
# in the tools cache (SKILLMIX_TOOLS_CACHE, default ~/.cache/skillmix/podman), so the base image
# and the dependency layer survive a fresh clone. Networking is never podman's bridge: callers
# pass --network host or --network none (the tests only talk to 127.0.0.1).
set -euo pipefail
command -v podman >/dev/null 2>&1 || {
  echo "podman.sh: podman is not installed: run 'make image-tools' (apt-get install podman runc mmdebstrap, as root)" >&2
  exit 127
}
root="${SKILLMIX_PODMAN_ROOT:-${SKILLMIX_TOOLS_CACHE:-$HOME/.cache/skillmix}/podman}"
mkdir -p "$root"
storage="$root/storage.conf"
containers="$root/containers.conf"
want_storage="[storage]
driver = \"overlay\"
graphroot = \"$root/storage\"
runroot = \"$root/run\"
"
want_containers='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
# Written only when they differ, so concurrent callers never read a half-written file.
write() {
  if [[ ! -f "$1" ]] || [[ "$(cat "$1")" != "${2%$'\n'}" ]]; then
    printf '%s' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
  fi
}
write "$storage" "$want_storage"
write "$containers" "$want_containers"
export CONTAINERS_STORAGE_CONF="$storage" CONTAINERS_CONF="$containers"
exec podman "$@"
