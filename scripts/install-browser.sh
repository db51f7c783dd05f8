#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the browser tests (tests/browser/) and
# scripts/screenshot-report.sh: installed with apt-get when missing and we are root (CI runs
# as root on Debian); nothing to do when they are there. Without root or apt-get it says what
# to install and exits 0, unless CI is set (there a missing browser is an error, as in the tests).
# Idempotent: a second run only checks.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
if have chromium && have chromedriver; then
    echo "chromium: $(chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
if [ "$(id -u)" = 0 ] && have apt-get; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    echo "installed: $(chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
echo "chromium not installed: run 'sudo apt-get install -y chromium chromium-driver' (Debian/Ubuntu)" >&2
if [ -n "${CI:-}" ]; then
    exit 1
fi
exit 0
