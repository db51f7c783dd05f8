"""Fixtures of the Helm chart tests: the helm binary (from .tools/bin first) and cached renders.

Every test here needs `helm` (``make tools`` installs it into .tools/bin); without it they skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.chart.helpers import VALUES_FILES, Helm, Render, find_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    binary = find_helm()
    if binary is None:
        pytest.skip("helm not found in .tools/bin or on PATH (run `make tools`)")
    yield Helm(binary, tmp_path_factory.mktemp("helm-values"))


@pytest.fixture(params=VALUES_FILES)
def rendered(request: pytest.FixtureRequest, helm: Helm) -> Render:
    """Each realistic values file, rendered once per session (cached by the Helm object)."""
    return helm.template(request.param)


@pytest.fixture
def render(helm: Helm) -> Callable[..., Render]:
    return helm.template
