#!/usr/bin/env bash
# The project's virtualenv, with heapsnap installed editable and the test tools.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
# pip leaves the C extension (the snapshot's integer parser) out where it cannot compile it.
if ! .venv/bin/python -c 'import heapsnap.analysis._cints'; then
  echo "heapsnap's C extension was not built: install gcc and Python's headers (apt-get install gcc python3-dev), then run this again" >&2
  exit 1
fi
