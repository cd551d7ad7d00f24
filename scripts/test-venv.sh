#!/usr/bin/env bash
# Creates (or updates) the Python virtual environment that the Python-backed integration tests use:
# target/pyenv, with the packages pinned in tests/python-requirements.txt. Idempotent and quick when
# nothing changed. Tests find it at target/pyenv/bin/python (or $CLOCKBRIDGE_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
req=tests/python-requirements.txt
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.requirements"
if ! cmp -s "$req" "$stamp"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
fi
"$venv/bin/python" -c 'import sys; print("test venv:", sys.executable)'
