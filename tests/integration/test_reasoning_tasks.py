"""Reasoning tasks end to end on the built-in mock backend (over real HTTP), from fixture
datasets loaded through Hugging Face `datasets`: the run folder in SkyThought's layout, its
numbers checked against its own responses, resume, and bad input as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from skillmix.method.reasoning_metrics import pass_at_k, pass_at_k_ks
from skillmix.tasks.config import builtin_tasks
from skillmix.tasks.rundir import RESULTS_JOURNAL, read_results
from tests.helpers import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "tasks"
MATH = str(DATA / "math500.jsonl")
GPQA = str(DATA / "gpqa_diamond.jsonl")


def evaluate(tmp_path: Path, *args: str, quality: float = 0.6, n: int = 4) -> Any:
    return run_cli(
        "evaluate",
        "--model",
        "mock-reasoner",
        "--backend",
        "mock",
        "--backend-args",
        f"quality={quality}",
        "--sampling-params",
        "temperature=0.8",
        "--n",
        str(n),
        "--result-dir",
        str(tmp_path / "results"),
        "--format",
        "json",
        *args,
    )


def run_folder(tmp_path: Path) -> Path:
    [folder] = (tmp_path / "results").iterdir()
    return folder


def test_tasks_lists_skythought_datasets() -> None:
    result = run_cli("tasks", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = {r["task"]: r for r in json.loads(result.stdout)}
    assert {"math500", "aime24", "aime25", "amc23", "gpqa_diamond", "olympiadbench_math_en"} <= set(
        rows
    )
    assert {"numina_amc_aime", "numina_math", "numina_olympiads"} <= set(rows)
    assert rows["math500"]["dataset"] == "qq8933/MATH500" and rows["math500"]["split"] == "test"
    assert rows["gpqa_diamond"]["gated"] is True and rows["gpqa_diamond"]["size"] == 198
    assert set(builtin_tasks()) == set(rows)


def test_math500_run_folder_agrees_with_its_own_responses(tmp_path: Path) -> None:
    result = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH)
    assert result.exit_code == 0, result.stderr
    folder = run_folder(tmp_path)
    assert folder.name.startswith("mock-reasoner_math500_") and len(folder.name.split("_")[-1]) == 6
    results = json.loads((folder / "results.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    assert json.loads(result.stdout) == summary
    assert list(results) == [str(i) for i in range(12)]  # keyed by _index, in order
    entry = results["0"]
    assert entry["input_conversation"][-1]["content"].endswith("What is $3+4\\cdot 2$?")
    assert len(entry["responses"]) == 4 and len(entry["token_usages"]) == 4
    verdicts = {i: [r["correctness"] for r in e["responses"]] for i, e in results.items()}
    flat = [v for vs in verdicts.values() for v in vs]
    assert 0 < sum(flat) < len(flat)  # quality 0.6: some right, some wrong
    assert summary["accuracy"] == round(sum(flat) / len(flat), 4)
    for k in pass_at_k_ks(4):  # the unbiased estimator over these very responses, in percent
        mean = sum(pass_at_k(4, sum(vs), k) for vs in verdicts.values()) / len(verdicts)
        assert summary["pass_at_k"][f"k={k}"] == round(mean * 100, 3)
    # the mock boxes the key's answer (right) or another one (wrong): the verdicts say which
    for e in results.values():
        for r in e["responses"]:
            assert r["correctness"] == ("\\boxed{" + e["answer"] + "}" in r["content"])
    ci = summary["skillmix"]["accuracy"]["ci95"]
    assert ci[0] <= summary["accuracy"] <= ci[1]
    assert summary["configuration"]["sampling_params"]["n"] == 4
    assert summary["avg_prompt_tokens"] == round(summary["total_prompt_tokens"] / 12, 3)


@pytest.mark.parametrize("quality, expected", [(1.0, 1.0), (0.0, 0.0)])
def test_mock_accuracy_is_the_quality_at_its_ends(
    tmp_path: Path, quality: float, expected: float
) -> None:
    result = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH, quality=quality)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["accuracy"] == expected
    assert set(summary["pass_at_k"].values()) == {expected * 100}


def test_gpqa_records_the_shuffled_order_and_scores_letters(tmp_path: Path) -> None:
    result = evaluate(tmp_path, "--task", "gpqa_diamond", "--dataset-file", GPQA, quality=1.0)
    assert result.exit_code == 0, result.stderr
    results = json.loads((run_folder(tmp_path) / "results.json").read_text())
    letters = set()
    for e in results.values():
        order = e["options_order"]
        assert sorted(order) == [0, 1, 2, 3]
        letter = "ABCD"[order.index(0)]
        assert e["Answer"] == letter and f"{letter}) {e['Correct Answer']}" in e["prompt"]
        assert all(r["correctness"] and r["answer"] == letter for r in e["responses"])
        letters.add(letter)
    assert len(letters) > 1  # the correct answer is not always in the same place


def test_same_seed_same_order_other_seed_other_order(tmp_path: Path) -> None:
    def orders(folder: Path) -> list[list[int]]:
        results = json.loads((folder / "results.json").read_text())
        return [e["options_order"] for e in results.values()]

    for seed in ("1", "1", "2"):
        out = tmp_path / f"s{seed}"
        result = evaluate(
            out,
            "--task",
            "gpqa_diamond",
            "--dataset-file",
            GPQA,
            "--seed",
            seed,
            "--overwrite",
            n=1,
        )
        assert result.exit_code == 0, result.stderr
    assert orders(run_folder(tmp_path / "s1")) != orders(run_folder(tmp_path / "s2"))


def test_resume_asks_nothing_again_and_a_rerun_without_it_is_refused(tmp_path: Path) -> None:
    first = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH)
    assert first.exit_code == 0, first.stderr
    folder = run_folder(tmp_path)
    again = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH)
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "(0 to ask)" in resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(first.stdout)
    assert (folder / RESULTS_JOURNAL).exists()


def test_a_torn_journal_line_is_left_out(tmp_path: Path) -> None:
    (tmp_path / RESULTS_JOURNAL).write_text(
        json.dumps({"_index": "0", "entry": {"responses": []}}) + "\n" + '{"_index": "1", "ent'
    )
    assert list(read_results(tmp_path)) == ["0"]


def test_temperature_zero_asks_once(tmp_path: Path) -> None:
    result = run_cli(
        "evaluate", "--task", "math500", "--dataset-file", MATH, "--model", "m",
        "--backend", "mock", "--sampling-params", "temperature=0", "--n", "4",
        "--result-dir", str(tmp_path), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Temperature 0 does not support multiple samples" in result.stderr
    assert json.loads(result.stdout)["configuration"]["sampling_params"]["n"] == 1


def test_a_task_from_the_users_own_file(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(
        "name: my_math\nhandler: math\ndataset_path: me/unused\nquestion_key: problem\n"
        "answer_key: answer\ntemplate: 'Solve: {problem} Put the answer in \\boxed{{}}.'\n"
    )
    result = evaluate(tmp_path, "--task-config", str(config), "--dataset-file", MATH, quality=1.0)
    assert result.exit_code == 0, result.stderr
    results = json.loads((run_folder(tmp_path) / "results.json").read_text())
    assert results["0"]["prompt"].startswith("Solve: What is")
    assert json.loads(result.stdout)["accuracy"] == 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (("--task", "nope"), "--task: unknown task 'nope'"),
        (("--task", "math500", "--dataset-file", "/nonexistent.jsonl"), "--dataset-file"),
        (("--task", "math500", "--dataset-file", __file__), "expected .jsonl or .parquet"),
        (("--task", "math500", "--dataset-file", GPQA), "no column 'problem'"),
        (("--task", "math500", "--k", "2", "--dataset-file", MATH), "--k is a SKILL-MIX flag"),
    ],
)
def test_bad_task_input_is_one_line_and_writes_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = evaluate(tmp_path, *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") <= 2, result.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_bad_task_file_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: x\nhandler: math\ndataset_path: d\nquestion_key: q\nanswer_key: a\ntemplate: t\nsplit: test\n"
    )
    result = evaluate(tmp_path, "--task-config", str(config), "--dataset-file", MATH)
    assert result.exit_code == 2
    assert "unknown key 'split'" in result.stderr


def test_score_rewrites_correctness_from_the_answer_key(tmp_path: Path) -> None:
    first = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH)
    assert first.exit_code == 0, first.stderr
    folder = run_folder(tmp_path)
    original = json.loads((folder / "results.json").read_text())
    tampered = json.loads(json.dumps(original))
    for e in tampered.values():
        for r in e["responses"]:
            r["correctness"] = not r["correctness"]
    (folder / "results.json").write_text(json.dumps(tampered))
    (folder / RESULTS_JOURNAL).unlink()

    only = run_cli("score", "--task", "math500", "--run-dir", str(folder), "--ids", "0,3")
    assert only.exit_code == 0, only.stderr
    partly = json.loads((folder / "results.json").read_text())
    for index, e in partly.items():
        flipped = [not r["correctness"] for r in tampered[index]["responses"]]
        expected = flipped if index in ("0", "3") else [not f for f in flipped]
        assert [r["correctness"] for r in e["responses"]] == expected

    every = run_cli("score", "--task", "math500", "--run-dir", str(folder), "--format", "json")
    assert every.exit_code == 0, every.stderr
    rescored = json.loads((folder / "results.json").read_text())
    assert rescored == original
    summary = json.loads(every.stdout)
    before = json.loads(first.stdout)
    assert summary["accuracy"] == before["accuracy"] and summary["pass_at_k"] == before["pass_at_k"]


def test_score_reads_a_skythought_run_folder(tmp_path: Path) -> None:
    """results.json as SkyThought writes it (no extracted answer, its own reasons)."""
    folder = tmp_path / "Qwen_QwQ_math500_abc123"
    folder.mkdir()
    rows = {
        "0": {"problem": "1+1?", "answer": "2", "_index": 0},
        "1": {"problem": "Half of 1?", "answer": "\\frac{1}{2}", "_index": 1},
    }
    contents = {"0": ["so \\boxed{2}", "\\boxed{3}"], "1": ["\\boxed{0.5}", "I think \\boxed{1/2}"]}
    results = {
        i: {
            **row,
            "prompt": row["problem"],
            "responses": [{"content": c, "correctness": None, "reason": None} for c in contents[i]],
            "token_usages": [{"completion_tokens": 5, "prompt_tokens": 3}] * 2,
        }
        for i, row in rows.items()
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "summary.json").write_text(json.dumps({"configuration": {"model": "Qwen/QwQ"}}))
    result = run_cli("score", "--task", "math500", "--run-dir", str(folder), "--format", "json")
    assert result.exit_code == 0, result.stderr
    scored = json.loads((folder / "results.json").read_text())
    assert [r["correctness"] for r in scored["0"]["responses"]] == [True, False]
    assert [r["correctness"] for r in scored["1"]["responses"]] == [True, True]
    summary = json.loads(result.stdout)
    assert summary["accuracy"] == 0.75 and summary["pass_at_k"] == {"k=2": 100.0, "k=1": 75.0}
    assert summary["configuration"]["model"] == "Qwen/QwQ"


def test_score_needs_a_run_dir_and_known_ids(tmp_path: Path) -> None:
    missing = run_cli("score", "--task", "math500", "--run-dir", str(tmp_path / "none"))
    assert missing.exit_code == 2 and "no such folder" in missing.stderr
    (tmp_path / "results.json").write_text(json.dumps({"0": {"answer": "1", "responses": []}}))
    bad = run_cli("score", "--task", "math500", "--run-dir", str(tmp_path), "--ids", "9")
    assert bad.exit_code == 2 and "--ids: no problem '9'" in bad.stderr


def test_leaderboard_puts_models_side_by_side_with_a_paired_comparison(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for model, quality in (("strong", "1.0"), ("weak", "0.0")):
        run = run_cli(
            "evaluate", "--task", "math500", "--dataset-file", MATH, "--model", model,
            "--backend", "mock", "--backend-args", f"quality={quality}", "--n", "2",
            "--sampling-params", "temperature=0.7", "--result-dir", str(results),
        )  # fmt: skip
        assert run.exit_code == 0, run.stderr
    board = run_cli("leaderboard", str(results), "--format", "json", "--out", str(tmp_path / "r"))
    assert board.exit_code == 0, board.stderr
    [task] = json.loads(board.stdout)
    strong, weak = task["models"]
    assert task["task"] == "math500" and strong["model"] == "strong" and weak["model"] == "weak"
    assert strong["accuracy"].startswith("100.0 [") and weak["accuracy"].startswith("0.0 [")
    assert (
        strong["vs_best"] == ""
        and weak["vs_best"].startswith("-100.0")
        and "on 12 problems" in weak["vs_best"]
    )
    markdown = (tmp_path / "r" / "report.md").read_text()
    page = (tmp_path / "r" / "report.html").read_text()
    links = re.findall(r'href="#(p-[^"]+)"', page)
    assert len(links) == 2 and all(f'id="{a}"' in page for a in links)  # cells drill down
    assert page.count('class="problem"') == 2 * 12  # every problem of every model
    assert page.count("(2/2)") == 12 and page.count("(0/2)") == 12  # strong right, weak wrong
    assert "Content-Security-Policy" in page and "<script src" not in page
    table = run_cli("leaderboard", str(results))
    for line in (strong, weak):  # the same numbers in every rendering
        for key in ("accuracy", "pass_at_n", "maj_at_n"):
            assert f"| {line[key]} |" in markdown
            assert f">{line[key]}<" in page
            assert (
                line[key] in table.stdout.replace("\n", " ")
                or line[key].split(" [")[0] in table.stdout
            )


def test_leaderboard_of_an_empty_folder_is_one_line(tmp_path: Path) -> None:
    result = run_cli("leaderboard", str(tmp_path))
    assert result.exit_code == 2 and "no run folder with results" in result.stderr


def test_numina_generate_then_score_keeps_the_correct_responses(tmp_path: Path) -> None:
    """Reject sampling: the amc_aime rows with a boxed solution, asked, scored, and the right
    answers written as chat-format training data with counts per source."""
    numina = str(DATA / "numina.jsonl")
    result = evaluate(tmp_path, "--task", "numina_amc_aime", "--dataset-file", numina, quality=0.5)
    assert result.exit_code == 0, result.stderr
    folder = run_folder(tmp_path)
    results = json.loads((folder / "results.json").read_text())
    assert len(results) == 3  # the math-source row and the row without \boxed are filtered
    kept = tmp_path / "train.jsonl"
    score = run_cli(
        "score", "--task", "numina_amc_aime", "--run-dir", str(folder), "--keep-correct", str(kept)
    )
    assert score.exit_code == 0, score.stderr
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    correct = sum(r["correctness"] for e in results.values() for r in e["responses"])
    assert len(lines) == correct and f"kept {correct} correct responses" in score.stderr
    assert correct > 0 and f"(amc_aime {correct})" in score.stderr
    for line in lines:
        assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
        assert line["source"] == "amc_aime"
    again = run_cli(
        "score", "--task", "numina_amc_aime", "--run-dir", str(folder), "--keep-correct", str(kept)
    )
    assert again.exit_code == 2 and "nothing is overwritten" in again.stderr


def test_system_prompts_and_user_templates_as_skythought_chooses_them(tmp_path: Path) -> None:
    def first_conversation(out: Path, *args: str) -> list[dict[str, str]]:
        result = run_cli(
            "evaluate", "--task", "math500", "--dataset-file", MATH, "--backend", "mock",
            "--backend-args", "quality=1.0", "--result-dir", str(out), "--format", "json", *args,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["accuracy"] == 1.0  # the mock still knows the answers
        [folder] = out.iterdir()
        conversation: list[dict[str, str]] = json.loads((folder / "results.json").read_text())["0"][
            "input_conversation"
        ]
        return conversation

    qwen = first_conversation(tmp_path / "a", "--model", "Qwen/QwQ-32B-Preview")
    assert qwen[0]["role"] == "system" and "You are Qwen developed by Alibaba" in qwen[0]["content"]
    named = first_conversation(
        tmp_path / "b", "--model", "my-model", "--system-prompt-name", "skythought"
    )
    assert named[0]["content"].startswith("Your role as an assistant involves thoroughly")
    assert "<|begin_of_thought|>" in named[0]["content"]
    templated = first_conversation(tmp_path / "c", "--model", "gpt-4o-mini")
    assert [m["role"] for m in templated] == ["user"]
    assert templated[0]["content"].startswith("User: Return your final response within")
    assert templated[0]["content"].endswith("\nAssistant: ")
    bad = evaluate(
        tmp_path / "d", "--task", "math500", "--dataset-file", MATH, "--system-prompt-name", "nope"
    )
    assert bad.exit_code == 2 and "unknown name 'nope'" in bad.stderr


def test_generate_then_score_is_evaluate_and_resume_from_checks_the_settings(
    tmp_path: Path,
) -> None:
    """SkyThought's flow: generate (no scoring), continue with --resume-from, score later."""
    common = ("--task", "math500", "--dataset-file", MATH, "--model", "mock-reasoner",
              "--backend", "mock", "--backend-args", "quality=0.6", "--n", "4",
              "--sampling-params", "temperature=0.8")  # fmt: skip
    made = run_cli("generate", *common, "--result-dir", str(tmp_path / "g" / "results"))
    assert made.exit_code == 0, made.stderr
    folder = run_folder(tmp_path / "g")
    generated = json.loads((folder / "results.json").read_text())
    assert all(r["correctness"] is None for e in generated.values() for r in e["responses"])
    assert json.loads((folder / "summary.json").read_text())["accuracy"] is None
    assert "skillmix score --task math500 --run-dir" in made.stderr

    again = run_cli("generate", *common, "--resume-from", str(folder))
    assert again.exit_code == 0 and "(0 to ask)" in again.stderr, again.stderr
    other = run_cli("generate", *common, "--seed", "99", "--resume-from", str(folder))
    assert other.exit_code == 2 and "another seed" in other.stderr

    scored = run_cli("score", "--task", "math500", "--run-dir", str(folder), "--format", "json")
    assert scored.exit_code == 0, scored.stderr
    whole = evaluate(tmp_path / "e", "--task", "math500", "--dataset-file", MATH)
    assert whole.exit_code == 0, whole.stderr
    assert run_folder(tmp_path / "e").name == folder.name  # the same settings, the same run
    one, other_summary = json.loads(scored.stdout), json.loads(whole.stdout)
    assert one["accuracy"] == other_summary["accuracy"]
    assert one["pass_at_k"] == other_summary["pass_at_k"]


def test_evaluate_resume_scores_what_a_generate_left_unscored(tmp_path: Path) -> None:
    results = tmp_path / "results"
    made = run_cli(
        "generate", "--task", "math500", "--dataset-file", MATH, "--model", "mock-reasoner",
        "--backend", "mock", "--backend-args", "quality=0.6", "--n", "4",
        "--sampling-params", "temperature=0.8", "--result-dir", str(results),
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr
    resumed = evaluate(tmp_path, "--task", "math500", "--dataset-file", MATH, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["accuracy"] is not None and 0 < summary["accuracy"] < 1


def test_math_verify_is_a_second_scorer_by_name_only(tmp_path: Path) -> None:
    default = evaluate(tmp_path / "a", "--task", "math500", "--dataset-file", MATH, quality=1.0)
    chosen = evaluate(
        tmp_path / "b", "--task", "math500", "--dataset-file", MATH, "--scorer", "math_verify",
        quality=1.0,
    )  # fmt: skip
    assert default.exit_code == 0 and chosen.exit_code == 0, chosen.stderr
    assert "scorer" not in json.loads(default.stdout)["configuration"]
    summary = json.loads(chosen.stdout)
    assert summary["configuration"]["scorer"] == "math_verify" and summary["accuracy"] == 1.0
    assert run_folder(tmp_path / "a").name != run_folder(tmp_path / "b").name
    rescored = run_cli(
        "score", "--task", "math500", "--run-dir", str(run_folder(tmp_path / "a")),
        "--scorer", "math_verify", "--format", "json",
    )  # fmt: skip
    assert rescored.exit_code == 0, rescored.stderr
    assert json.loads(rescored.stdout)["configuration"]["scorer"] == "math_verify"
    gpqa = evaluate(
        tmp_path / "c", "--task", "gpqa_diamond", "--dataset-file", GPQA, "--scorer", "math_verify"
    )
    assert gpqa.exit_code == 2 and "multiple choice" in gpqa.stderr
    assert not (tmp_path / "c" / "results").exists()  # refused before writing anything
