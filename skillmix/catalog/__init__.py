"""Skills and topics: the reference CSV/TXT formats and the catalog built into skillmix."""

from skillmix.catalog._loaders import (
    INACTIVE_STATUSES,
    builtin_catalog,
    load_catalog,
    load_skills_csv,
    load_topics,
    parse_skills_csv,
    parse_topics,
    read_text_file,
)
from skillmix.catalog._model import Catalog, Skill

__all__ = [
    "INACTIVE_STATUSES",
    "Catalog",
    "Skill",
    "builtin_catalog",
    "load_catalog",
    "load_skills_csv",
    "load_topics",
    "parse_skills_csv",
    "parse_topics",
    "read_text_file",
]
