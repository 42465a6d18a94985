#!/usr/bin/env bash
# Full-size benchmarks: BERT-base and GPT2-base, seq 128, all three modes, one invocation
# per model (so ratios come from one run on one machine state). Minutes per model on a
# 2-core machine; run in the background:
#   nohup benchmarks/run_full.sh > benchmarks/logs/run_full.log 2>&1 &
# LAYERS=4 benchmarks/run_full.sh benches the first 4 layers only (files get an _L4 suffix).
# `python -m ditto_spu.cli_bench ARGS` is `ditto-spu bench ARGS`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODELS=${MODELS:-"bert-base gpt2-base"}
SEQ=${SEQ:-128}
for model in $MODELS; do
    suffix="" ; layer_args=()
    if [[ -n "${LAYERS:-}" ]]; then suffix="_L${LAYERS}"; layer_args=(--layers "$LAYERS"); fi
    out="benchmarks/results/${model}_s${SEQ}${suffix}"
    echo "== $model seq $SEQ ${LAYERS:+layers $LAYERS} $(date -Is)"
    "$PY" -m ditto_spu.cli_bench --model "$model" --seq-len "$SEQ" --modes puma,mpcformer,ditto \
        "${layer_args[@]}" --embedding none \
        --json "$out.json" --markdown "$out.md" --plot benchmarks/plots
    echo "== done $model $(date -Is)"
done
