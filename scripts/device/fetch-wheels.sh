#!/usr/bin/env bash
# Download, into .whl/ at the repository root, the wheels that `pip install '.[fairseq]'` needs
# on the GPU machine (CPython 3.12, Linux x86_64, no network) and that its image lacks: the
# image's torch, triton, CUDA libraries and the packages in MACHINE_HAS stay as they are.
# Versions as in requirements/lock.txt; antlr4-python3-runtime ships only as a source archive,
# so its wheel is built here; setuptools builds the plugin there. install.sh installs from them.
# Usage: bash scripts/device/fetch-wheels.sh   (needs pip and PyPI, about 23 MB; PYTHON: the
#   pip to use; MACHINE_HAS="": carry every wheel but torch's, about 95 MB)
# The GPU image's packages (its package list), as far as the plugin and fairseq need them:
default_machine_has="numpy scipy scikit-learn torchaudio cython lxml sacrebleu sentencepiece regex
    tabulate colorama portalocker pyyaml packaging tqdm click joblib threadpoolctl narwhals
    cloudpickle"
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=$root/.whl
python=${PYTHON:-python3}
machine_has=${MACHINE_HAS-$default_machine_has}
target=(--only-binary=:all: --python-version 3.12 --implementation cp)
for glibc in $(seq 40 -1 17); do target+=(--platform "manylinux_2_${glibc}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64)
pip() { "$python" -m pip --disable-pip-version-check "$@"; }
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
antlr=$(grep -i '^antlr4-python3-runtime==' "$root/requirements/lock.txt")
pip wheel -q --no-deps -w "$dest.tmp" "$antlr"
# what pip would install in an empty CPython 3.12, from the wheels of PyPI and the one above
# (--target: pip before 24 takes the platform options only with it; a dry run writes nothing)
pip install -q --dry-run --ignore-installed --target "$dest.tmp/target" --report "$dest.tmp/report.json" \
    "${target[@]}" \
    --find-links "$dest.tmp" -c "$root/requirements/lock.txt" "$root[fairseq]"
"$python" - "$dest.tmp/report.json" $machine_has > "$dest.tmp/wheels.txt" <<'EOF'
import json, re, sys

# torch, what torch requires and the CUDA libraries are on the machine; the plugin is built there
torch_and_plugin = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|sympy|mpmath|networkx|jinja2"
                              r"|markupsafe|filelock|fsspec|typing-extensions|rdrop-fairseq"
                              r"|antlr4-python3-runtime)$")
machine_has = {re.sub(r"[-_.]+", "-", name.lower()) for name in sys.argv[2:]}
for item in json.load(open(sys.argv[1]))["install"]:
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"].lower())
    if not torch_and_plugin.match(name) and name not in machine_has:
        print(f"{name}=={item['metadata']['version']}")
EOF
grep -i '^setuptools==' "$root/requirements/lock.txt" >> "$dest.tmp/wheels.txt" || echo setuptools >> "$dest.tmp/wheels.txt"
pip download -q --no-deps "${target[@]}" -d "$dest.tmp" -r "$dest.tmp/wheels.txt"
rm "$dest.tmp/report.json" "$dest.tmp/wheels.txt"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
du -sh "$dest"
ls "$dest"
