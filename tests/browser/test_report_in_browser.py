"""report.html and compare.html of a small mock run, in headless Debian chromium (offline
flags, see cdp.FLAGS), at a phone's width (390 CSS pixels): no console error, no horizontal
overflow, every plot loads, tables sort, and the answer browser filters and opens answers.

Skips without chromium, except under CI (``CI`` set), where a missing browser fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from tests.browser.cdp import chromium, find_chromium, open_tab
from tests.helpers import run_cli

PHONE = (390, 844)
DESKTOP = (1280, 800)
MAX_SCREENS = 10  # the desktop page stays under about this many screens tall
FIRST_SCORE_BOX = """(() => {
  const td = document.querySelector('table.ranking td[data-score]');
  const r = td.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, text: td.innerText,
          scrollY: window.scrollY, inner: [window.innerWidth, window.innerHeight]};
})()"""
ROWS = (
    "Array.from(document.querySelectorAll('#ab-table tbody tr.ab-row'), r => "
    "({model: r.cells[1].textContent, k: +r.cells[2].textContent, skills: r.cells[6].textContent}))"
)
NO_OVERFLOW = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
IMAGES = (
    "Array.from(document.images).map(i => ({name: i.dataset.name, ok: i.complete && "
    "i.naturalWidth > 0, w: i.getBoundingClientRect().right}))"
)
SORT_FIRST_SCORE = """(() => {
  const t = document.querySelector('table.leaderboard');
  const col = Array.from(t.tBodies[0].rows[0].cells).findIndex(c => 'score' in c.dataset);
  const th = t.tHead.rows[0].cells[col];
  const read = () => Array.from(t.tBodies[0].rows, r => JSON.parse(
      r.cells[col].dataset.score ?? 'null'));
  th.click();
  const up = read(), sortUp = th.getAttribute('aria-sort');
  th.click();
  const down = read(), sortDown = th.getAttribute('aria-sort');
  const resorted = t.classList.contains('resorted');
  t.tHead.rows[0].cells[0].click();  // back to rank order: tie-group lines mean something again
  return {up, sortUp, down, sortDown, resorted, rankOrder: !t.classList.contains('resorted')};
})()"""


def browser_binary() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return found


def experiment(store: Path) -> dict[str, Any]:
    return {
        "name": "browser",
        "seed": 3,
        "ks": [2, 3],
        "combinations": 4,
        "generation_rounds": 2,
        "students": [
            {"name": "strong", "backend": "mock", "model": "mock-strong", "quality": 0.9},
            {"name": "weak", "backend": "mock", "model": "mock-weak", "quality": 0.4},
        ],
        "grader": {"name": "grader", "backend": "mock", "model": "mock-grader", "rounds": 2},
        "metrics": {"bootstrap_samples": 100},
        "store": str(store),
    }


async def inspect_report(binary: str, report: Path, skill: str) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {}
    with chromium(binary) as browser:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(browser, session, report.as_uri(), *PHONE)
            out["first_score"] = await tab.js(FIRST_SCORE_BOX)
            status = "document.getElementById('ab-status').textContent"
            out["status"] = await tab.until(f"/answers match/.test({status}) && {status}")
            rows = "document.querySelectorAll('#ab-table tbody tr.ab-row').length"
            out["rows_all"] = await tab.js(rows)
            await tab.js(
                "(() => { const i = document.getElementById('ab-skill'); "
                f"i.value = {json.dumps(skill)}; "
                "i.dispatchEvent(new Event('input', {bubbles: true})); })()"
            )
            out["rows_skill"] = await tab.js(rows)
            out["row_skills"] = await tab.js(
                "Array.from(document.querySelectorAll('#ab-table tbody tr.ab-row'), "
                "r => r.cells[6].textContent)"
            )
            out["by_round_and_score"] = await tab.js(
                "(() => { const set = (id, v) => { const e = document.getElementById(id); "
                "e.value = v; e.dispatchEvent(new Event(e.type === 'search' ? 'input' : "
                "'change')); }; set('ab-skill', ''); set('ab-round', '2'); set('ab-sort', 'score'); "
                "const d = document.getElementById('ab-desc'); d.checked = true; "
                "d.dispatchEvent(new Event('change')); "
                "const rows = Array.from(document.querySelectorAll('#ab-table tbody tr.ab-row')); "
                "const out = rows.map(r => [+r.cells[4].textContent, r.cells[8].textContent]); "
                "set('ab-round', ''); d.checked = false; d.dispatchEvent(new Event('change')); "
                "set('ab-sort', 'model'); set('ab-skill', "
                + json.dumps(skill)
                + "); return out; })()"
            )
            await tab.js("document.querySelector('#ab-table .ab-open').click()")
            out["detail"] = await tab.js(
                "document.querySelector('#ab-table tr.ab-detail').innerText"
            )
            out["prompts"] = await tab.js(
                "Array.from(document.querySelectorAll('tr.ab-detail details pre'), "
                "p => p.textContent)"
            )
            out["overflow_ok"] = await tab.js(NO_OVERFLOW)
            out["widths"] = await tab.js(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            out["images"] = await tab.js(IMAGES)
            out["sort"] = await tab.js(SORT_FIRST_SCORE)
            out["errors"] = tab.errors()
            await tab.ws.close()
    return out


async def inspect_desktop(binary: str, report: Path, skill: str) -> dict[str, Any]:
    """report.html on a desktop screen: its height, and the drill-down links into the answer
    browser (a leaderboard cell, a per-skill cell, and a link naming model, k and skill)."""
    import aiohttp

    out: dict[str, Any] = {}
    with chromium(binary) as browser:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(browser, session, report.as_uri(), *DESKTOP)
            status = "document.getElementById('ab-status').textContent"
            await tab.until(f"/answers match/.test({status}) && {status}")
            out["height"] = await tab.js("document.documentElement.scrollHeight")
            out["gallery_folded"] = await tab.js(
                "Array.from(document.querySelectorAll('#gallery details.examples'), d => d.open)"
            )
            link = "table.leaderboard td[data-k='3'][data-student='weak'] a.drill"
            out["cell_href"] = await tab.js(f"document.querySelector({json.dumps(link)}).href")
            await tab.js(f"document.querySelector({json.dumps(link)}).click()")
            out["cell_rows"] = await tab.until(
                f"document.getElementById('ab-k').value === '3' && {ROWS}"
            )
            out["cell_scrolled"] = await tab.js(
                "document.getElementById('answers').getBoundingClientRect().top < 800"
            )
            skill_link = (
                "Array.from(document.querySelectorAll('#skills a.drill'))"
                f".find(a => a.href.includes('student=strong') && a.closest('tr').cells[0]"
                f".textContent === {json.dumps(skill)})"
            )
            out["skill_href"] = await tab.js(f"{skill_link}.href")
            await tab.js(f"{skill_link}.click()")
            out["skill_rows"] = await tab.until(
                f"document.getElementById('ab-skill').value !== '' && {ROWS}"
            )
            query = f"student=weak&k=2&skill={quote(skill)}"
            await tab.js(f"location.hash = {json.dumps('#answers?' + query)}")
            out["all_three_rows"] = await tab.until(
                f"document.getElementById('ab-k').value === '2' && {ROWS}"
            )
            out["errors"] = tab.errors()
            await tab.ws.close()
    return out


async def inspect_compare(binary: str, page: Path) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {}
    with chromium(binary) as browser:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(browser, session, page.as_uri(), *PHONE)
            out["overflow_ok"] = await tab.js(NO_OVERFLOW)
            out["widths"] = await tab.js(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            out["images"] = await tab.js(IMAGES)
            out["sort"] = await tab.js(SORT_FIRST_SCORE)
            out["links"] = await tab.js(
                "Array.from(document.querySelectorAll('a.run-report'), a => a.href)"
            )
            out["errors"] = tab.errors()
            await tab.ws.close()
    return out


async def inspect_partial(binary: str, report: Path) -> dict[str, Any]:
    """The answer browser of a partial run: the answers not graded yet, marked so."""
    import aiohttp

    out: dict[str, Any] = {}
    with chromium(binary) as browser:
        async with aiohttp.ClientSession() as session:
            tab = await open_tab(browser, session, report.as_uri(), *PHONE)
            status = "document.getElementById('ab-status').textContent"
            out["status"] = await tab.until(f"/answers match/.test({status}) && {status}")
            out["rows"] = await tab.js(
                "(() => { const e = document.getElementById('ab-score'); e.value = 'ungraded'; "
                "e.dispatchEvent(new Event('change')); "
                "return Array.from(document.querySelectorAll('#ab-table tbody tr.ab-row'), "
                "r => [r.cells[1].textContent, +r.cells[2].textContent, r.cells[7].textContent]); "
                "})()"
            )
            await tab.js("document.querySelector('#ab-table .ab-open').click()")
            out["detail"] = await tab.js(
                "document.querySelector('#ab-table tr.ab-detail').innerText"
            )
            out["overflow_ok"] = await tab.js(NO_OVERFLOW)
            out["errors"] = tab.errors()
            await tab.ws.close()
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binary = browser_binary()
    tmp = tmp_path_factory.mktemp("browser")
    store = tmp / "store"
    path = tmp / "browser.yaml"
    path.write_text(yaml.safe_dump(experiment(store)))
    result = run_cli("evaluate", "-f", str(path), "--no-progress")
    assert result.exit_code == 0, result.stderr
    (run,) = store.glob("browser-*")
    out = tmp / "compare"
    result = run_cli(
        "compare", str(run), str(run), "--out", str(out), "--baseline", "weak@1", "--format", "md"
    )
    assert result.exit_code == 0, result.stderr
    answers = [
        json.loads(line)
        for line in (run / "report" / "answers.jsonl").read_text().splitlines()
        if line
    ]
    skill = answers[0]["skills"][0]
    # a partial run: weak's k = 3, generation round 2 answers are not graded yet
    partial = tmp / "partial-run"
    shutil.copytree(run, partial)
    for manifest in (partial / "grades" / "grader" / "weak" / "k3" / "r2").glob("g*/_SUCCESS"):
        manifest.unlink()
    result = run_cli("report", str(partial), "--out", str(tmp / "partial-report"))
    assert result.exit_code == 0, result.stderr
    return {
        "partial": asyncio.run(inspect_partial(binary, tmp / "partial-report" / "report.html")),
        "run": run,
        "answers": answers,
        "skill": skill,
        "report": asyncio.run(inspect_report(binary, run / "report" / "report.html", skill)),
        "desktop": asyncio.run(inspect_desktop(binary, run / "report" / "report.html", skill)),
        "compare": asyncio.run(inspect_compare(binary, out / "compare.html")),
    }


def test_report_has_no_console_errors(pages: dict[str, Any]) -> None:
    assert pages["report"]["errors"] == []


def test_answer_browser_lists_every_answer_and_filters_by_skill(pages: dict[str, Any]) -> None:
    report, answers, skill = pages["report"], pages["answers"], pages["skill"]
    assert report["rows_all"] == len(answers) == 2 * 2 * 2 * 4  # students x ks x G x M
    expected = [a for a in answers if any(skill.lower() in s.lower() for s in a["skills"])]
    assert 0 < report["rows_skill"] == len(expected) < len(answers)
    assert all(skill in text for text in report["row_skills"])
    assert report["status"].startswith(f"{len(answers)} of {len(answers)} answers match")


def test_answer_browser_filters_by_round_and_sorts_by_score(pages: dict[str, Any]) -> None:
    rows = pages["report"]["by_round_and_score"]
    second = [a for a in pages["answers"] if a["generation_round"] == 2]
    assert len(rows) == len(second) and {r[0] for r in rows} == {2}
    fractions = [float(r[1]) if r[1] != "\u2014" else -1.0 for r in rows]
    assert fractions[0] >= fractions[-1] and len(set(fractions)) > 1
    best = max(a["skill_fraction"] for a in second if a["skill_fraction"] is not None)
    assert fractions[0] == pytest.approx(best, abs=0.005)


def test_an_opened_answer_shows_the_whole_story(pages: dict[str, Any]) -> None:
    detail = pages["report"]["detail"]
    for part in ("first draft", "revision request", "revision", "round 1", "round 2", "voted"):
        assert part in detail, part
    # the grading prompt is shown with the answer put back in place
    prompts = [p for p in pages["report"]["prompts"] if "grader" in p.lower()]
    assert prompts and "\u0000" not in prompts[0]
    assert any(a["topic"] in prompts[0] for a in pages["answers"])


def test_report_fits_a_phone(pages: dict[str, Any]) -> None:
    report = pages["report"]
    assert report["overflow_ok"], report["widths"]
    assert report["images"] and all(i["ok"] for i in report["images"]), report["images"]
    assert all(i["w"] <= 390 for i in report["images"])


def test_leaderboard_sorts_by_clicking_its_header(pages: dict[str, Any]) -> None:
    for which in ("report", "compare"):
        sort = pages[which]["sort"]
        assert sort["sortUp"] == "ascending" and sort["sortDown"] == "descending"
        assert sort["up"] == sorted(sort["up"]) and sort["down"] == sorted(sort["down"])[::-1]
        assert sort["resorted"] and sort["rankOrder"]


def test_compare_page_in_the_browser(pages: dict[str, Any]) -> None:
    compare = pages["compare"]
    assert compare["errors"] == []
    assert compare["overflow_ok"], compare["widths"]
    assert compare["images"] and all(i["ok"] for i in compare["images"])
    report = (pages["run"] / "report" / "report.html").as_uri()
    assert compare["links"] and set(compare["links"]) == {report}


def test_partial_run_lists_answers_not_graded_yet(pages: dict[str, Any]) -> None:
    partial = pages["partial"]
    assert partial["errors"] == []
    total = len(pages["answers"])
    assert partial["status"].startswith(f"{total} of {total} answers match")
    assert partial["rows"] == [["weak", 3, "not graded yet"]] * 4  # M = 4 combinations
    assert "Not graded yet" in partial["detail"] and "first draft" in partial["detail"]
    assert partial["overflow_ok"]


def test_a_phone_shows_a_score_on_its_first_screen(pages: dict[str, Any]) -> None:
    """Issue 23: at 390x844, before any scrolling, a leaderboard score is on screen."""
    box = pages["report"]["first_score"]
    assert box["scrollY"] == 0 and box["inner"] == list(PHONE)
    assert box["top"] >= 0 and box["bottom"] <= PHONE[1], box
    assert box["left"] >= 0 and box["right"] <= PHONE[0], box
    assert any(ch.isdigit() for ch in box["text"])


def test_the_desktop_page_is_under_ten_screens(pages: dict[str, Any]) -> None:
    """Issue 23: the example cards are folded behind a control, so the page stays short."""
    desktop = pages["desktop"]
    assert desktop["errors"] == []
    assert desktop["height"] < MAX_SCREENS * DESKTOP[1], desktop["height"]
    assert desktop["gallery_folded"] and not any(desktop["gallery_folded"])


def test_a_cell_opens_the_answer_browser_filtered_to_its_answers(pages: dict[str, Any]) -> None:
    """Issue 23: every number links to its answers: a leaderboard cell (model and k), a
    per-skill cell (model and skill), and a link naming model, k and skill."""
    desktop, answers, skill = pages["desktop"], pages["answers"], pages["skill"]
    assert desktop["cell_href"].endswith("#answers?student=weak&k=3")
    rows = desktop["cell_rows"]
    expected = [a for a in answers if a["student"] == "weak" and a["k"] == 3]
    assert len(rows) == len(expected) > 0
    assert all(r["model"] == "weak" and r["k"] == 3 for r in rows)
    assert desktop["cell_scrolled"]
    rows = desktop["skill_rows"]
    assert "student=strong" in desktop["skill_href"]
    expected = [a for a in answers if a["student"] == "strong" and skill in a["skills"]]
    assert len(rows) == len(expected) > 0
    assert all(r["model"] == "strong" and skill in r["skills"] for r in rows)
    rows = desktop["all_three_rows"]
    expected = [
        a for a in answers if a["student"] == "weak" and a["k"] == 2 and skill in a["skills"]
    ]
    assert len(rows) == len(expected)
    assert all(r["model"] == "weak" and r["k"] == 2 and skill in r["skills"] for r in rows)
