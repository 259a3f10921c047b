#!/usr/bin/env bash
# The project's virtualenv, with heapsnap installed editable and the test tools.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
