#!/usr/bin/env bash
# Issue 10: run profiles/measurements/matrix-h200.json on a lent H200, one fresh process per row.
#
# Prepare here (once, repo root; the wheels are git-ignored under .whl/, ~58 MB, under the 64 MiB
# the device run carries):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2 pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 \
#     transformers==5.24.0 peft==0.21.2 accelerate==1.16.0
# (bitsandbytes and pydantic are missing on the device image; transformers / peft / accelerate are
# carried at constraints.txt's pins so the measured stack is the modelled one; torch stays the image's.)
#
# Run there (device tool): command "bash probes/device_matrix.sh", carry [".whl"], timeout_s 480.
# BUDGET_S (default 360) bounds the planned GPU seconds (rows are dropped lowest priority first);
# MATRIX_LIMIT_S (default 420) kills the runner if the plan was optimistic, so the results are still
# packed before the 480 s device limit. That leaves ~5 minutes of the 15 for the machine's start and one
# rerun (e.g. BUDGET_S=150 MATRIX_LIMIT_S=200, timeout_s 260). Results come back as $OUT/matrix-h200.tgz
# (runs/*.json, probe/*.json, plan.json, summary.*) plus summary.md, summary.json and log.txt.
set -uo pipefail
OUT=${OUT:-/tmp/matrix-out}
BUDGET_S=${BUDGET_S:-360}
MATRIX_LIMIT_S=${MATRIX_LIMIT_S:-420}
TIMEOUT_PER_RUN=${TIMEOUT_PER_RUN:-150}
WORK=/tmp/matrix-h200
mkdir -p "$OUT" "$WORK"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" | tee "$OUT/log.txt"; exit 3; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, transformers, peft, bitsandbytes, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__)"
  python3 -m probes.matrix profiles/measurements/matrix-h200.json --dry-run --budget-s "$BUDGET_S"
  start=$(date +%s)
  # the whole matrix is bounded too: the runner kills its current child on SIGTERM, records stay written
  timeout --signal=TERM "$MATRIX_LIMIT_S" python3 -m probes.matrix profiles/measurements/matrix-h200.json \
    --out "$WORK" --budget-s "$BUDGET_S" --timeout-per-run "$TIMEOUT_PER_RUN"
  echo "matrix rc=$? wall=$(( $(date +%s) - start )) s"
} 2>&1 | tee "$OUT/log.txt"
cp "$WORK"/summary.md "$WORK"/summary.json "$OUT"/ 2>/dev/null
tar czf "$OUT/matrix-h200.tgz" -C "$WORK" .
