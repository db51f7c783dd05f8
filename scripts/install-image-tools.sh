#!/usr/bin/env bash
# What `make image` needs on the machine: podman, runc (podman's default crun fails here with
# cgroups in hybrid mode) and mmdebstrap (the local base image). Installed with apt-get when
# missing and we are root on Debian/Ubuntu; otherwise one line says what to install.
set -euo pipefail
missing=()
for tool in podman runc mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-image-tools: missing ${missing[*]}: install them (Debian: apt-get install podman runc mmdebstrap), or build with Docker: docker build -f docker/Dockerfile ." >&2
  exit 1
fi
echo "install-image-tools: apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq podman runc mmdebstrap >/dev/null
