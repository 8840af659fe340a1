#!/usr/bin/env bash
# One entry point for a fresh Debian machine with Python 3.11 and nothing else prepared:
# installs the system packages it lacks (compiler, venv; chromium for the tests), creates .venv,
# builds the Cython kernels, installs the project (editable), then runs what was asked:
#   scripts/dev.sh [lab] [ARGS]  the main job: JupyterLab on notebooks/ (the workbench); ARGS go to
#                                jupyter lab, so `scripts/dev.sh --port 8899 --no-browser` works too
#   scripts/dev.sh demo [ARGS]   import, fuse, tune a zoo model, compare with ONNX Runtime
#   scripts/dev.sh test [ARGS]   the whole test suite (what .ci/run runs)
#   scripts/dev.sh setup         only the set-up
# The set-up is skipped when nothing it depends on changed since it last succeeded: a stamp in
# .venv records a digest of the build inputs (pyproject.toml, setup.py, kernels_pyx/, the Python
# and the extras installed), so a second run starts its job within seconds.  WB_REBUILD=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
what=lab
case "${1:-}" in
  lab|demo|test|setup) what="$1"; shift ;;
  ""|-*) ;;   # no sub-command, or JupyterLab's own options: the main job
  *) echo "usage: scripts/dev.sh [lab|demo|test|setup] [ARGS]  (ARGS starting with - go to jupyter lab)" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
"$PY" -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
"$PY" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
  || missing+=(python3-dev)
# The browser test drives Debian's chromium (Playwright's own browser download cannot work here).
if [ "$what" = "test" ] && ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
extras="ui"
[ "$what" = "test" ] && extras="ui,test,peers,tf"   # peers: OpenVINO, so the bench tests run it too; tf: the TensorFlow-file tests

# The set-up is current when the stamp holds the digest of what it builds from and lists the
# extras asked for (a set-up for the tests, ui,test,peers, serves the other jobs too).
digest="$( { .venv/bin/python -c 'import sys; print(sys.version)'; cat pyproject.toml setup.py;
             find kernels_pyx -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \) -print0 | sort -z | xargs -0 cat;
           } | sha256sum | cut -d' ' -f1)"
stamp=.venv/.workbench-setup
current() {
  [ "${WB_REBUILD:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$digest" ] || return 1
  local have; have=",$(sed -n 2p "$stamp"),"
  for e in ${extras//,/ }; do [[ "$have" == *",$e,"* ]] || return 1; done
  ls workbench/_kernels/*.so >/dev/null 2>&1 && .venv/bin/python -c "import workbench._kernels.eltwise" 2>/dev/null
}
if current; then
  echo "== set-up is current (.venv, kernels built from these sources; WB_REBUILD=1 redoes it)"
else
  rm -f "$stamp"
  pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
  echo "== installing build requirements and the project (.[${extras}]), building the Cython kernels"
  "${pip[@]}" install "setuptools>=68" wheel "cython>=3.0" "numpy>=1.26" "scipy>=1.11"
  "${pip[@]}" install --no-build-isolation -e ".[${extras}]"

  if [ "$what" = "test" ]; then
    # The PyTorch export tests need the CPU build of torch 2.13.0. Install it only where that wheel is
    # available locally (pip's find-links): from the public index, plain torch pulls GBs of CUDA.
    if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
      links="${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}"
      if [ -n "$links" ] && ls "$links"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
        echo "== installing torch 2.13.0 (CPU) from $links for the PyTorch export tests"
        "${pip[@]}" install "torch==2.13.0" onnxscript
      else
        echo "== no local CPU torch 2.13.0 wheel: the PyTorch export tests will be skipped"
      fi
    fi
  fi
  printf '%s\n%s\n' "$digest" "$extras" > "$stamp"
fi

case "$what" in
  setup) ;;
  lab)
    root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-root)
    exec .venv/bin/jupyter lab --ServerApp.root_dir=notebooks "${root[@]}" "$@" ;;
  demo) exec .venv/bin/workbench demo "$@" ;;
  test) exec .venv/bin/python -m pytest -n 2 -q "$@" ;;
esac
