#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root and install the plugin with its pinned stack.
# Usage: bash scripts/setup-venv.sh   (VENV=path to use another location)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# torch first and pinned exactly: an unpinned torch resolves to a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[test,plot]"
echo "ready: $venv ($("$venv/bin/python" -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__)' 2>/dev/null))"
