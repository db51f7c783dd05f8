#!/usr/bin/env bash
# The base image for `make image` on a machine without Docker Hub: Debian bookworm made by
# mmdebstrap, laid out like the official python:3.11-slim-bookworm image (a venv whose prefix is
# /usr/local gives /usr/local/bin/python, pip and site-packages where the Dockerfile expects
# them). Built once into podman's storage in the tools cache (scripts/podman.sh); a second run
# with the image present does nothing. Users with Docker never need it: the Dockerfile's default
# base is the official image, pinned by digest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-localhost/python:3.11-slim-bookworm}
podman="$here/scripts/podman.sh"
if "$podman" image exists "$BASE_IMAGE"; then
  echo "base image present: $BASE_IMAGE"
  exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || { echo "image-base: mmdebstrap is missing: run 'make image-tools'" >&2; exit 1; }
start=$SECONDS
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# The pip.conf points pip at Debian's CA bundle (the python:slim image trusts certifi's; pip's
# own vendored bundle would not know a proxy's CA that the build host mounts over Debian's).
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='chroot "$1" python3 -m venv /usr/local' \
  --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/usr/local/pip.conf"' \
  bookworm - "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main" \
| "$podman" import --quiet --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
echo "base image built: $BASE_IMAGE ($((SECONDS - start)) s, $("$podman" image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes)"
