"""What a generation unit is expected to cost, from the plan alone: the numbers behind the
launch's GPU-hour estimate, the generation Jobs' deadlines and the report's "estimated" column.

Rough on purpose (every reply uses max_tokens, a fixed decode speed): a deadline takes a margin
over it, and the report shows the measured GPU-seconds beside it.
"""

from __future__ import annotations

import math
import re

from skillmix.method.prompts import render_generation_prompts
from skillmix.pipeline.context import RunContext

# Assumptions behind the estimates (printed with them).
MODEL_LOAD_SECONDS = 600
DECODE_TOKENS_PER_SECOND = 40.0
# A generation Job's deadline gives each unit at least this long (small units on a slow or
# busy server must not fail), and the client stops itself this long before the Job's deadline,
# so it exits 4 with its log uploaded rather than being killed.
MIN_UNIT_SECONDS = 900
CLIENT_MARGIN_SECONDS = 60
# A MIG profile name: nvidia.com/mig-<compute slices>g.<memory>gb, out of 7 compute slices.
_MIG = re.compile(r"mig-(\d+)g\.(\d+)gb")
MIG_SLICES = 7


def _turns(ctx: RunContext, k: int) -> int:
    """Requests per combination at ``k`` (the generation prompt's turns)."""
    combo = ctx.combinations(k)[0]
    turns = render_generation_prompts(ctx.generation_prompt, ctx.skills(combo.skills), combo.topic)
    return len(turns)


def unit_decode_seconds(ctx: RunContext, student: str, k: int) -> float:
    """Wall seconds one unit of ``student`` at ``k`` decodes for: its requests in waves of the
    student's concurrency, each reply max_tokens long at DECODE_TOKENS_PER_SECOND."""
    spec = ctx.experiment.student(student)
    requests = ctx.experiment.combinations * _turns(ctx, k)
    waves = math.ceil(requests / max(1, min(spec.concurrency, ctx.experiment.combinations)))
    return waves * (spec.sampling.max_tokens or 512) / DECODE_TOKENS_PER_SECOND


def job_deadline_seconds(
    unit_work: list[float],
    *,
    load_seconds: int,
    margin: float,
    per_unit_max: int,
) -> int:
    """A generation Job's activeDeadlineSeconds: the model-load budget (pods with a model
    server) plus, per unit, ``margin`` times its estimated work, within [MIN_UNIT_SECONDS,
    ``per_unit_max``]."""
    per_unit = [min(per_unit_max, max(MIN_UNIT_SECONDS, margin * w)) for w in unit_work]
    return math.ceil(load_seconds + sum(per_unit))


def gpu_fraction(resource: str) -> float:
    """The share of a whole GPU one unit of ``resource`` is: 1 for nvidia.com/gpu, the compute
    slices out of 7 for a MIG profile (nvidia.com/mig-1g.10gb: 1/7)."""
    m = _MIG.search(resource)
    if not m:
        return 1.0
    return min(1.0, int(m.group(1)) / MIG_SLICES)
