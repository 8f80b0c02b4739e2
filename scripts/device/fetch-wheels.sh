#!/usr/bin/env bash
# Download, into .whl/ at the repository root, the wheels that a CUDA machine without network
# needs to run this project next to its own Python 3.12, torch, triton, numpy, sacrebleu and
# sentencepiece: fairseq (ve-fairseq's cp312 manylinux build) and the small packages it and the
# plugin import that such an image lacks. antlr4-python3-runtime ships only as a source archive,
# so its wheel is built here. install.sh installs them there without touching torch.
# Usage: bash scripts/device/fetch-wheels.sh   (needs pip and PyPI; about 22 MB)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=$root/.whl
# pins as in setup.py; antlr4 as omegaconf 2.3 requires it
binary=(ve-fairseq==0.12.3 hydra-core==1.3.8 omegaconf==2.3.1 bitarray==3.12.3 sacremoses==0.2.0)
source_only=(antlr4-python3-runtime==4.9.3)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64; do platforms+=(--platform "$p"); done
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest.tmp" "${binary[@]}"
python3 -m pip wheel -q --no-deps -w "$dest.tmp" "${source_only[@]}"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
du -sh "$dest"
ls "$dest"
