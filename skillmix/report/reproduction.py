"""The reproduction block of every report: the commands that give the numbers again, the
skillmix version and git revision, the catalog and prompt hashes (as run.json holds them) and
a citation line for SKILL-MIX and for the tool. ``reproduction`` is stored in summary.json
when the report is built; ``reproduction_view`` is what report.html and report.md show."""

from __future__ import annotations

from dataclasses import dataclass

from skillmix import settings
from skillmix.artifacts import Summary
from skillmix.artifacts.summary import Reproduction

SKILL_MIX_CITATION = (
    "Dingli Yu, Simran Kaur, Arushi Gupta, Jonah Brown-Cohen, Anirudh Goyal, Sanjeev Arora. "
    "SKILL-MIX: a Flexible and Expandable Family of Evaluations for AI models. "
    "arXiv:2310.17567, 2023."
)


def reproduction(run_uri: str, version: str, *, imported_from: str | None = None) -> Reproduction:
    """The block of a report built now: ``imported_from``, the reference tree of an import."""
    revision = settings.REVISION.raw() or None
    if imported_from is not None:
        commands = [
            f"skillmix import-reference {imported_from} --out {run_uri}",
            f"skillmix report {run_uri}",
        ]
    else:
        commands = [
            "skillmix evaluate -f experiment.yaml  # experiment.yaml: run.json's 'experiment'",
            f"skillmix report {run_uri}",
        ]
    tool = f"skillmix {version}" + (f" (git revision {revision})" if revision else "")
    return Reproduction(
        commands=commands,
        revision=revision,
        citation=[SKILL_MIX_CITATION, f"{tool}: a SKILL-MIX evaluation tool."],
    )


@dataclass(frozen=True)
class ReproductionView:
    """The block as shown: commands, then (label, value) facts, then the citation lines."""

    commands: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]
    citation: tuple[str, ...]


def reproduction_view(summary: Summary) -> ReproductionView | None:
    """None for a summary written before the block existed (its report renders as it did)."""
    block = summary.reproduction
    if block is None:
        return None
    prompts, catalog = summary.prompts, summary.catalog
    facts = (
        ("skillmix version", summary.skillmix_version),
        ("git revision", block.revision or "unknown (not set: `skillmix version` prints it)"),
        ("run id", summary.run_id),
        ("catalog hash", catalog.hash or "unknown"),
        (f"generation prompt {prompts.generation.name} hash", prompts.generation.hash),
        (f"grading prompt {prompts.grading.name} hash", prompts.grading.hash),
        ("seed", str(summary.experiment.seed)),
    )
    return ReproductionView(tuple(block.commands), facts, tuple(block.citation))
