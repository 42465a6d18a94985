#!/usr/bin/env bash
# Full-size benchmarks: BERT-base and GPT2-base, seq 128, all three modes, one invocation
# per model (so the ratios come from one run in one machine state). Tens of minutes per
# model on a 2-core machine; run it in the background:
#   nohup benchmarks/run_full.sh > benchmarks/logs/run_full.log 2>&1 &
# Environment:
#   MODELS="bert-base gpt2-base"  models, one invocation each
#   LAYERS=4                      bench the first 4 layers only (file suffix _L4)
#   KERNELS=0                     --no-kernels: every op in stock SPU (file suffix _nokernels)
#   MODES=puma,mpcformer,ditto    modes, in this order
# `python -m ditto_spu.cli bench ARGS` is `ditto-spu bench ARGS`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODELS=${MODELS:-"bert-base gpt2-base"}
MODES=${MODES:-puma,mpcformer,ditto}
SEQ=${SEQ:-128}
status=0
for model in $MODELS; do
    suffix="" ; extra=()
    if [[ -n "${LAYERS:-}" ]]; then suffix="${suffix}_L${LAYERS}"; extra+=(--layers "$LAYERS"); fi
    if [[ "${KERNELS:-1}" == "0" ]]; then suffix="${suffix}_nokernels"; extra+=(--no-kernels); fi
    out="benchmarks/results/${model}_s${SEQ}${suffix}"
    echo "== $model seq $SEQ ${extra[*]} $(date -Is)"
    "$PY" -m ditto_spu.cli bench --model "$model" --seq-len "$SEQ" --modes "$MODES" \
        "${extra[@]}" --embedding none \
        --json "$out.json" --markdown "$out.md" --plot benchmarks/plots || status=$?
    echo "== done $model (exit $status) $(date -Is)"
done
exit $status
