"""The parts every artifact is built from: the base models (unknown keys ignored, so that
files written by older versions still read), the schema version, prompt and catalog sources."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from skillmix.method.prompts import GradingStyle

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({SCHEMA_VERSION})

M = TypeVar("M")

# the fields that name a model, a unit or a combination, described once for every artifact
StudentName = Annotated[str, Field(description="Student name.")]
GraderName = Annotated[str, Field(description="Grader name.")]
NumberOfSkills = Annotated[int, Field(description="Number of skills.")]
GenerationRound = Annotated[int, Field(description="Generation round.")]
CombinationIndex = Annotated[int, Field(description="Combination index.")]


class Artifact(BaseModel):
    # unknown keys are ignored so that files written by older versions still read
    model_config = ConfigDict(extra="ignore")


class OmitsAbsent(Artifact):
    """A part whose optional keys are left out of the JSON when unset (None), as the dicts it
    replaces never had them."""

    _OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._OMITTED_WHEN_NONE:
            if data.get(key, 0) is None:
                del data[key]
        return data


class Versioned(Artifact):
    schema_version: int = Field(SCHEMA_VERSION, description="Version of this file's format.")


class CatalogSource(Artifact):
    source: str | None = Field(None, description="Where the catalog was loaded from.")
    hash: str = Field("", description="Content hash of skills and topics.")


class PromptVersion(Artifact):
    name: str = Field(description="Prompt version name.")
    hash: str = Field("", description="Content hash of the template.")


class GradingPromptVersion(PromptVersion):
    style: GradingStyle = Field(description="How grader replies are parsed.")
