#!/usr/bin/env bash
# Every GPU check in one command, for a session lent a GPU machine (CI never has one).
#
# Prepare here, once (both folders are git-ignored; together about 50 MB, under the tool's 64 MiB
# with the working tree):
#   .whl/        wheels the GPU machine's Python 3.12 image lacks or has too old (about 25 MB):
#                transformers 5.24, tokenizers 0.23.3 and peft (the image had 5.17, 0.23.2),
#                typing-extensions, pydantic, pydantic-core, annotated-types, typing-inspection;
#                for the server, explain and tune tests fastapi, fastapi-offline, starlette,
#                opentelemetry-api, captum, optuna, alembic, sqlalchemy, colorlog, mako
#                (pip download --no-deps --only-binary=:all: --python-version 3.12
#                --implementation cp --platform manylinux_2_28_x86_64 --platform
#                manylinux2014_x86_64 -d .whl NAME==VERSION, the versions `pip show` gives here;
#                onnxruntime's 28 MB wheel does not fit, so the image's runs the ONNX test)
#   .gpu/minilm  all-MiniLM-L6-v2 packed by `python scripts/gpu_pack.py pack <model dir>
#                .gpu/minilm` (int8 matrices, 23 MB; the float32 file is 90 MB); unpacked to
#                float32 below, so its accuracies are close to, not equal to, the CPU runs'
#   .gpu/data    sst2/train.tsv and sst2/dev.tsv from ../shared/data
# Then run, with carry [".gpu", ".whl"]:   bash scripts/gpu_session.sh
# Output lands in $OUT (test_gpu.log, gpu_check.log, gpu_profile.log); about 5 minutes.
set -u -o pipefail
root=$(pwd)
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$root/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export FUNCFORMER_BENCH_DATA="$root/.gpu/data"
backbone=/tmp/minilm
python3 scripts/gpu_pack.py unpack "$root/.gpu/minilm" "$backbone" || exit 1
nvidia-smi -L
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__)"
timeout 200 python3 -m pytest -q -p no:cacheprovider -o addopts=-ra tests/test_gpu.py 2>&1 \
    | tee "$out/test_gpu.log" | tail -40
cd bench || exit 1
timeout 180 python3 gpu_check.py --backbone "$backbone" 2>&1 | grep -v "Loading weights" \
    | tee "$out/gpu_check.log"
timeout 120 python3 gpu_profile.py --backbone "$backbone" 2>&1 | grep -v "Loading weights" \
    | tee "$out/gpu_profile.log" | grep -E "^(first|warm) "
