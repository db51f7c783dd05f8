"""Skills and topics as immutable values, so a catalog can be hashed and shared freely."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from skillmix.errors import SkillmixError


@dataclass(frozen=True)
class Skill:
    """One language skill; ``name`` is kept verbatim because prompts and rubrics quote it."""

    name: str
    definition: str
    example: str
    category: str = ""


@dataclass(frozen=True)
class Catalog:
    """Active skills and topics in file order (the order feeds the sampler)."""

    skills: tuple[Skill, ...]
    topics: tuple[str, ...]
    source: str = "builtin"
    _by_name: dict[str, Skill] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.skills})

    @property
    def skill_names(self) -> list[str]:
        return [s.name for s in self.skills]

    def skill(self, name: str) -> Skill:
        """Look a skill up by its exact name (names are keys, compared verbatim)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SkillmixError(
                f"unknown skill {name!r} in catalog {self.source}",
                hint="names must match the catalog's `skill` column exactly; see `skillmix catalog list`",
            ) from None

    def content_hash(self) -> str:
        """A short hash of everything that influences prompts and sampling (not the source path)."""
        payload = {
            "skills": [[s.name, s.definition, s.example, s.category] for s in self.skills],
            "topics": list(self.topics),
        }
        blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
