#!/usr/bin/env bash
# Run the model-client tests against the oldest openai release pyproject allows (the floor),
# installed beside the project's venv in a throwaway folder. Not part of `make test` (it
# downloads a second SDK); run it when the client's use of the SDK changes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
floor=$(sed -n 's/.*"openai>=\([0-9.]*\)".*/\1/p' "$here/pyproject.toml")
py="$here/.venv/bin/python"
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
"$py" -m pip install --quiet --target "$target" "openai[aiohttp]==$floor"
PYTHONPATH="$target:$here" "$py" -c "import openai; print('openai', openai.__version__)"
cd "$here"
PYTHONPATH="$target:$here" "$py" -m pytest -q -p no:logging \
  tests/integration/test_client.py tests/integration/test_mock_server.py tests/integration/test_fault_injection.py
