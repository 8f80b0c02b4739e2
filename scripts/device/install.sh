# Install the plugin on the GPU machine (no network) as a user with a CUDA environment would:
#   pip install --no-index --find-links .whl '.[fairseq]'
# from the wheels fetch-wheels.sh put in .whl/, into the Python that holds the machine's torch
# (PYTHON, default python3). Its torch, triton and numpy must stay as they are: the install
# stops with an error line if it changed them. Adds the folder of the installed commands
# (fairseq-train, rdrop-*) to PATH.
# Usage: . scripts/device/install.sh   (or bash scripts/device/install.sh)
_rdrop_install() {
    local repo python before after
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    python=${PYTHON:-python3}
    [ -d "$repo/.whl" ] || { echo "error: no $repo/.whl: run scripts/device/fetch-wheels.sh where pip can reach PyPI" >&2; return 1; }
    before=$("$python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -iE '^(torch|triton|numpy)==')
    "$python" -m pip install -q --disable-pip-version-check --no-index --find-links "$repo/.whl" \
        "$repo[fairseq]" || { echo "error: pip could not install the plugin from $repo/.whl" >&2; return 1; }
    after=$("$python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -iE '^(torch|triton|numpy)==')
    if [ "$before" != "$after" ]; then
        echo "error: installing the plugin changed $(echo $before) into $(echo $after)" >&2
        return 1
    fi
    export PATH="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
    echo "installed: $("$python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null | grep -iE '^(rdrop-fairseq|ve-fairseq|torch)==' | tr '\n' ' ')"
}
_rdrop_install
_rdrop_status=$?
unset -f _rdrop_install
(return 0 2>/dev/null) && return $_rdrop_status || exit $_rdrop_status
