#!/usr/bin/env bash
# Reproduce docs/report-screenshot.png and docs/answer-browser.png: run the quickstart
# experiment (what `make demo` runs: the built-in mock backend) into a fresh temporary store,
# then take screenshots of its real report.html with headless Chromium: the top of the page,
# and the answer browser with one answer opened (driven over the DevTools protocol by
# tests/browser/cdp.py, with the same offline flags as the browser tests).
#
# Needs Debian's Chromium (`make browser`, or `apt-get install -y chromium`); CHROMIUM=/path
# overrides; PYTHON (default .venv/bin/python) is the interpreter with skillmix installed.
# Usage: scripts/screenshot-report.sh [OUTPUT.png [ANSWERS.png]]
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-docs/report-screenshot.png}"
answers_out="${2:-docs/answer-browser.png}"
python="${PYTHON:-.venv/bin/python}"
browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$browser" ]; then
    echo "error: chromium not found; install it (make browser) or set CHROMIUM" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# `evaluate` ends with "report: <folder>/report.html (also report.md, ...)" on stderr.
"$python" -m skillmix evaluate -f examples/quickstart.yaml --store "$tmp/store" --no-progress \
    2>"$tmp/log" >/dev/null || { cat "$tmp/log" >&2; exit 1; }
report="$(sed -n 's/^report: \(.*report\.html\).*/\1/p' "$tmp/log" | tail -n 1)"
if [ ! -f "$report" ]; then
    echo "error: the run did not name a report.html (last lines below)" >&2
    tail -n 5 "$tmp/log" >&2
    exit 1
fi

mkdir -p "$(dirname "$out")" "$(dirname "$answers_out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --no-first-run --disable-sync --disable-quic \
    --user-data-dir="$tmp/profile" --hide-scrollbars --window-size=1400,2400 \
    --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" >/dev/null 2>&1
test -s "$out"
echo "screenshot of $report: $out"

CHROMIUM="$browser" "$python" - "$report" "$answers_out" <<'EOF'
"""The answer browser, filtered to one skill, with its first answer opened."""
import asyncio
import base64
import sys
from pathlib import Path

import aiohttp

from tests.browser.cdp import chromium, find_chromium, open_tab

report, target = Path(sys.argv[1]), Path(sys.argv[2])


async def shoot() -> None:
    binary = find_chromium()
    assert binary
    with chromium(binary) as browser:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(browser, session, report.resolve().as_uri(), 1200, 1400)
            await tab.until("/answers match/.test(document.getElementById('ab-status').textContent)")
            await tab.js(
                "(() => { const i = document.getElementById('ab-skill'); i.value = 'metaphor';"
                " i.dispatchEvent(new Event('input')); document.querySelector('.ab-open').click();"
                " document.getElementById('answers').scrollIntoView(); })()"
            )
            top = await tab.js("document.getElementById('answers').getBoundingClientRect().top + scrollY")
            shot = await tab.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": top - 8, "width": 1200, "height": 1400, "scale": 1},
            )
            target.write_bytes(base64.b64decode(shot["data"]))
            await tab.ws.close()


asyncio.run(shoot())
print(f"screenshot of the answer browser: {target}")
EOF
