# Source from bash on a CUDA machine without network: installs the wheels that fetch-wheels.sh put
# in .whl/ into /tmp/site, without dependencies, so the machine's own torch, triton and numpy stay
# as they are, and puts them and this checkout (rdrop_fairseq) on PYTHONPATH.
# Usage: . scripts/device/install.sh
_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$_repo"/.whl/*.whl \
    && export PYTHONPATH=/tmp/site:$_repo${PYTHONPATH:+:$PYTHONPATH}
