#!/usr/bin/env bash
# Reproduce docs/report-screenshot.png: run the demo (`make demo`: the quickstart experiment on
# the built-in mock backend, resumed from the response cache when it already ran) and take a
# screenshot of its real report.html with headless Chromium.
#
# Needs Chromium (Debian/Ubuntu: `apt-get install -y chromium`); CHROMIUM=/path overrides.
# Usage: scripts/screenshot-report.sh [OUTPUT.png]   (default: docs/report-screenshot.png)
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-docs/report-screenshot.png}"
browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$browser" ]; then
    echo "error: chromium not found; install it (apt-get install -y chromium) or set CHROMIUM" >&2
    exit 2
fi

# `make demo` ends with "report: <folder>/report.html (also report.md, ...)" on stderr.
log="$(mktemp)"
profile="$(mktemp -d)"
trap 'rm -rf "$log" "$profile"' EXIT
make --no-print-directory demo 2>"$log" >/dev/null || { cat "$log" >&2; exit 1; }
report="$(sed -n 's/^report: \(.*report\.html\).*/\1/p' "$log" | tail -n 1)"
if [ ! -f "$report" ]; then
    echo "error: the demo did not name a report.html (last lines below)" >&2
    tail -n 5 "$log" >&2
    exit 1
fi

mkdir -p "$(dirname "$out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1400,2400 \
    --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" >/dev/null 2>&1
test -s "$out"
echo "screenshot of $report: $out"
