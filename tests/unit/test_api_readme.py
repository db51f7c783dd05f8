"""The README's Python API snippet runs as written (with the two names it leaves to the reader
filled in) and gives what its comments promise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from skillmix import api

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python block"
    return match.group(1)


def test_the_readme_python_api_snippet_runs() -> None:
    k = 3
    grader_reply = "\n".join(
        ["| Skill | Point |", "|---|---|"]
        + [f"| skill {i} | 1 |" for i in range(1, k + 1)]
        + ["| Topic | 1 |", "| Length | 1 |"]
    )
    graded = [
        api.GradedAnswer(
            student="s",
            grader="g",
            k=k,
            generation_round=1,
            grading_round=1,
            index=i,
            topic="t",
            skills=("a", "b", "c"),
            answer="One sentence.",
            points=(1.0,) * (k + 2),
        )
        for i in range(4)
    ]
    namespace: dict[str, Any] = {"grader_reply": grader_reply, "graded_answers": graded}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)
    assert len(namespace["combos"]) == 5 and len(namespace["combos"][0].skills) == 3
    assert [s.name for s in namespace["skills"]] == list(namespace["combos"][0].skills)
    assert namespace["turns"] and namespace["combos"][0].topic in "".join(namespace["turns"])
    assert "Answer text." in namespace["prompt"]
    assert namespace["answer"] == "Bees hum."  # as the README's comment says
    assert namespace["n"] == 1
    assert isinstance(namespace["grade"], api.ParsedGrade)
    rows = namespace["rows"]
    assert rows and all(isinstance(r, api.MetricRow) for r in rows)


def test_the_readme_lists_the_public_names() -> None:
    text = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Za-z_]+)(?:\([^)]*\))?`", text.split("```", 2)[2]))
    missing = {name for name in listed if name != "__all__" and name not in api.__all__}
    assert missing == set()
