"""The system prompt and user template a task run sends, as SkyThought chooses them: the text
given (``--system-prompt``), or a named one (``--system-prompt-name``), or the model's default
from SkyThought's table (``system_prompts.yaml``), else none."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from skillmix.errors import SkillmixError


@dataclass(frozen=True)
class ModelPrompts:
    system_prompt: str | None
    user_template: str | None  # SkyThought's "{}" is the task's prompt


def _table() -> dict[str, Any]:
    text = (resources.files("skillmix.tasks") / "system_prompts.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def system_prompt_names() -> list[str]:
    return list(_table()["system_prompts"])


def model_prompts(model: str, *, text: str | None, name: str | None) -> ModelPrompts:
    """What to send for ``model`` (``text`` and ``name`` exclude each other)."""
    if text and name:
        raise SkillmixError("give --system-prompt or --system-prompt-name, not both")
    table = _table()
    default = table["models"].get(model, {})
    if name:
        if name not in table["system_prompts"]:
            raise SkillmixError(
                f"--system-prompt-name: unknown name {name!r}",
                hint=f"known: {', '.join(table['system_prompts'])}",
            )
        text = table["system_prompts"][name]
    elif not text and default.get("system_prompt"):
        text = table["system_prompts"][default["system_prompt"]]
    return ModelPrompts(text or None, default.get("user_template"))
