"""Size and speed of report.html with its answer browser, for 8 models x 4 k x 100 combinations.

Runs ``skillmix evaluate`` on the built-in mock backend (8 students, k = 2, 3, 4, 5, M = 100,
G = 1, R = 3 by default: 3,200 answers and 9,600 grading verdicts) into a fresh temporary
store, then rebuilds the report in-process (``build_report``) and reports: the page's size,
how much of it is the answer browser's data (gzip-compressed JSON in base64) and the plots,
the size of that data uncompressed, bytes per answer, the exports' sizes and the build time.
With ``--browser`` it also opens the page in headless chromium (tests/browser/cdp.py) and
measures the time until the answer browser is ready, and the time to filter by a skill.

    .venv/bin/python benchmarks/bench_report_size.py [--students 8] [--ks 2,3,4,5]
        [--combinations 100] [--generation-rounds 1] [--grading-rounds 3] [--browser] [--smoke]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import REPO, emit, log, machine_info, parse_args_with_smoke

SMOKE = {"students": 2, "ks": "2,3", "combinations": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=8)
    p.add_argument("--ks", default="2,3,4,5")
    p.add_argument("--combinations", type=int, default=100)
    p.add_argument("--generation-rounds", type=int, default=1)
    p.add_argument("--grading-rounds", type=int, default=3)
    p.add_argument("--browser", action="store_true", help="also time the page in chromium")
    p.add_argument("--skillmix", default=str(Path(sys.executable).parent / "skillmix"))
    return parse_args_with_smoke(p, argv, SMOKE)


def experiment(args: argparse.Namespace, store: Path) -> dict[str, Any]:
    ks = [int(k) for k in args.ks.split(",")]
    return {
        "name": "report-size",
        "seed": 10,
        "ks": ks,
        "combinations": args.combinations,
        "generation_rounds": args.generation_rounds,
        "students": [
            {
                "name": f"student-{i + 1}",
                "backend": "mock",
                "model": f"mock-{i + 1}",
                "quality": round(0.95 - 0.1 * i, 2),
            }
            for i in range(args.students)
        ],
        "grader": {
            "name": "grader",
            "backend": "mock",
            "model": "mock-grader",
            "quality": 0.9,
            "rounds": args.grading_rounds,
        },
        "metrics": {"bootstrap_samples": 1000},
        "store": str(store),
    }


def browser_timing(page: Path, skill: str) -> dict[str, Any]:
    import asyncio

    sys.path.insert(0, str(REPO))
    from tests.browser.cdp import chromium, find_chromium, open_tab

    binary = find_chromium()
    if binary is None:
        return {"browser": "chromium not found"}

    async def measure() -> dict[str, Any]:
        import aiohttp

        with chromium(binary) as browser:
            async with aiohttp.ClientSession() as session:
                started = time.perf_counter()
                tab = await open_tab(browser, session, page.as_uri(), 1280, 900)
                loaded = time.perf_counter() - started
                await tab.until(
                    "/answers match/.test(document.getElementById('ab-status').textContent)", 60
                )
                ready = time.perf_counter() - started
                filtered = await tab.js(
                    "(() => { const t = performance.now(); const i = "
                    "document.getElementById('ab-skill'); i.value = "
                    + repr(skill)
                    + "; i.dispatchEvent(new Event('input')); return [performance.now() - t, "
                    "document.querySelectorAll('#ab-table tbody tr').length]; })()"
                )
                errors = tab.errors()
                await tab.ws.close()
        return {
            "load_event_seconds": round(loaded, 3),
            "answer_browser_ready_seconds": round(ready, 3),
            "skill_filter_ms": round(filtered[0], 1),
            "rows_after_filter": filtered[1],
            "console_errors": len(errors),
        }

    return asyncio.run(measure())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skillmix-bench-report-") as tmp:
        store = Path(tmp) / "store"
        exp = experiment(args, store)
        path = Path(tmp) / "exp.yaml"
        path.write_text(yaml.safe_dump(exp))
        log(f"evaluating {args.students} students x k={args.ks} x M={args.combinations} (mock)")
        started = time.perf_counter()
        subprocess.run(
            [args.skillmix, "evaluate", "-f", str(path), "--no-progress", "--format", "json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        evaluate_seconds = time.perf_counter() - started
        (run_dir,) = store.glob("report-size-*")

        from skillmix.pipeline.context import open_run
        from skillmix.report.build import build_report

        run, ctx = open_run(str(run_dir))
        started = time.perf_counter()
        _summary, files, _metrics = build_report(run, ctx)
        build_seconds = time.perf_counter() - started
        html = files["report.html"].decode()
        found = re.search(r'id="ab-data"[^>]*>([^<]*)<', html)
        assert found, "no answer browser data in the page"
        payload = found.group(1)
        raw = gzip.decompress(base64.b64decode(payload))
        counted = re.search(r'id="ab-data" data-count="(\d+)"', html)
        assert counted, "the answer browser does not say how many answers it holds"
        count = int(counted.group(1))
        plots = sum(len(v) for k, v in files.items() if k.startswith("plots/"))
        images = sum(len(m) for m in re.findall(r'src="data:image/png;base64,([^"]*)"', html))
        doc: dict[str, Any] = {
            "benchmark": "report_size",
            "smoke": args.smoke,
            **machine_info(),
            "students": args.students,
            "ks": exp["ks"],
            "M": args.combinations,
            "G": args.generation_rounds,
            "R": args.grading_rounds,
            "answers": count,
            "report_html_bytes": len(html.encode()),
            "answer_data_base64_bytes": len(payload),
            "answer_data_json_bytes": len(raw),
            "answer_data_bytes_per_answer": round(len(payload) / count, 1),
            "embedded_plot_bytes": images,
            "plot_png_bytes": plots,
            "answers_jsonl_bytes": len(files["answers.jsonl"]),
            "scores_csv_bytes": len(files["scores.csv"]),
            "summary_json_bytes": len(files["summary.json"]),
            "evaluate_seconds": round(evaluate_seconds, 2),
            "report_build_seconds": round(build_seconds, 2),
        }
        if args.browser:
            page = Path(tmp) / "report.html"
            page.write_text(html, encoding="utf-8")
            doc.update(browser_timing(page, "metaphor"))
    emit(doc)
    return doc


if __name__ == "__main__":
    main()
