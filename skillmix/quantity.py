"""Kubernetes resource quantities (``250m``, ``4Gi``), checked where the user writes them
(experiment files, cluster profiles) rather than inside helm or the API server."""

from __future__ import annotations

import re
from typing import Any

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


def check_resources(value: dict[str, Any]) -> None:
    """``requests``/``limits`` of Kubernetes quantities (ValueError naming the bad one), so that
    a wrong amount is refused here rather than inside helm or the API server."""
    for key, amounts in value.items():
        if key not in ("requests", "limits"):
            raise ValueError(f"unknown key {key!r} (allowed: requests, limits)")
        if not isinstance(amounts, dict):
            raise ValueError(f"{key}: expected a mapping of resource names to quantities")
        for name, amount in amounts.items():
            if isinstance(amount, bool) or not re.fullmatch(QUANTITY, str(amount)):
                raise ValueError(f"{key}.{name}: {amount!r} is not a Kubernetes quantity")
