#!/usr/bin/env bash
# Create (or reuse) the project virtual environment and install the pinned stack plus this package (editable).
# Idempotent: a second run with unchanged requirements.txt only re-links the package (a few seconds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${LCM_DISTILL_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.requirements.installed"
if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  echo "[setup] installing pinned requirements (first run: ~3-4 minutes)"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
  cp requirements.txt "$stamp"
fi
"$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e . 2> >(grep -v "^WARNING: Location" >&2)
echo "[setup] ready: $VENV"
