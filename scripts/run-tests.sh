#!/usr/bin/env bash
# Install blobcast and its test tools into .venv, then run the test suite.
# Extra arguments go to pytest (e.g. -k hdf5).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,dev]"
exec .venv/bin/python -m pytest -q "$@"
