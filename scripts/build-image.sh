#!/usr/bin/env bash
# `make image`: build docker/Dockerfile, unchanged from what Docker users build, with podman.
#
# What the build needs is set here, not remembered: podman with this project's settings
# (scripts/podman.sh: runc, lowered ulimits, storage in the tools cache), a local Debian
# bookworm base with the official python image's layout (scripts/image-base.sh, cached), host
# networking (never podman's bridge) and the host's CA bundle mounted read-only so pip trusts
# what the host trusts (nothing from the host ends up in the image). Podman's layer cache keeps
# the base and the locked dependency layer between builds on one machine.
# Prints the image reference on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
IMAGE=${IMAGE:-localhost/skillmix:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/python:3.11-slim-bookworm}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
podman="$here/scripts/podman.sh"

./scripts/install-image-tools.sh
BASE_IMAGE="$BASE_IMAGE" ./scripts/image-base.sh

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' skillmix/__init__.py)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then revision="$revision-dirty"; fi
mounts=()
if [[ -f "$CA_BUNDLE" ]]; then mounts=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"); fi
start=$SECONDS
"$podman" build --quiet --network host "${mounts[@]}" \
  --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" -f docker/Dockerfile -t "$IMAGE" . >/dev/null
# Old intermediate images only: recent ones are the layer cache of the next build.
"$podman" image prune -f --filter until=168h >/dev/null
size=$("$podman" image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE in $((SECONDS - start)) s: $((size / 1000000)) MB, skillmix $version, revision $revision" >&2
echo "$IMAGE"
