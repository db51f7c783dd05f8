"""``skillmix report RUN --format latex``: the leaderboards as LaTeX tables (booktabs), laid
out from the view model, so a paper shows the numbers report.html and report.md show."""

from __future__ import annotations

from skillmix.report.view import BoardView, ReportView

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "≈": r"$\approx$",
    "—": "---",
}


def tex_escape(text: object) -> str:
    """Text for a LaTeX table cell: the special characters escaped."""
    return "".join(_SPECIAL.get(c, c) for c in str(text))


def board_latex(board: BoardView) -> list[str]:
    """One leaderboard: rank, groups, student, grader, the per-k cells (mean [95% interval])
    and the score with its bootstrap interval."""
    groups = ["groups"] if board.has_letters else []
    header = ["rank", *groups, "student", "grader"]
    header += [f"$k={k}$" for k in board.ks] + [tex_escape(board.score_label)]
    spec = "r" + "l" * (len(groups) + 2) + "r" * (len(board.ks) + 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(board.caption)}}}",
        rf"\label{{tab:skillmix-{board.metric.replace('_', '-')}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row in board.rows:
        cells = [tex_escape(row.rank_text), *([row.letters] if board.has_letters else [])]
        cells += [tex_escape(row.student), tex_escape(row.grader)]
        cells += [tex_escape(c.interval_text) if c else "---" for c in row.cells.values()]
        score = f"{row.score_text} {row.score_ci_text}".strip() if row.rank is not None else "---"
        lines.append(" & ".join([*cells, tex_escape(score)]) + r" \\")
    return [*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def render_latex(view: ReportView) -> str:
    """Every leaderboard of the run, one ``table`` each (needs ``\\usepackage{booktabs}``)."""
    lines = [
        f"% SKILL-MIX leaderboards of run {view.run_id} (skillmix report --format latex)",
        r"% needs \usepackage{booktabs}; cells: mean [95% Wilson interval]; score: mean over k "
        "[95% bootstrap interval]",
        "",
    ]
    for board in view.boards:
        lines += board_latex(board)
    return "\n".join(lines)
