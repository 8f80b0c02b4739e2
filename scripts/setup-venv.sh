#!/usr/bin/env bash
# Create (or update) .venv at the repository root with the tested stack: the plugin installed
# editable with its extras, every version fixed by requirements/lock.txt (torch 2.13.0).
# Usage: bash scripts/setup-venv.sh   (VENV=path: another location; PYTHON=python3.12: another
# interpreter for a new venv; the lock is for CPython 3.11 and 3.12 on Linux x86_64)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python=${PYTHON:-python3}
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    case $version in
        3.11 | 3.12) ;;
        *) echo "error: the locked stack needs Python 3.11 or 3.12, $python is $version" \
                "(set PYTHON=python3.12, for example)" >&2
           exit 1 ;;
    esac
    "$python" -m venv "$venv"
fi
# what pip is about to do, before its own progress (measured 2026-12-04, Python 3.11, Linux x86_64)
echo "setup-venv: installing the locked stack (requirements/lock.txt) into $venv with pip."
echo "  From PyPI that is about 2.9 GB to download (torch 2.13.0's CUDA build and its nvidia-*"
echo "  libraries are most of it; they also run on a CPU) and about 5.3 GB on disk; with torch's"
echo "  CPU wheel already at hand, about 0.6 GB and 2.3 GB. It took 3 to 6 minutes where measured."
"$venv/bin/python" -m pip install --disable-pip-version-check \
    -c "$root/requirements/lock.txt" -e "$root[fairseq,test,plot]"
echo "ready: $venv ($("$venv/bin/python" -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__)' 2>/dev/null))"
