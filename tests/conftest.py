from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import reference_dir

pytest_plugins = ["tests.fixtures_s3"]


@pytest.fixture(scope="session")
def reference() -> Path:
    return reference_dir()
