"""Write the QAD figures the demo quotes (ditto_spu/results/qad_minilm_ditto.json) from the
outputs of the documented run, so no figure is typed by hand:

    python benchmarks/ship_qad_results.py benchmarks/results/qad_minilm_distill.json \\
        benchmarks/results/qad_minilm_eval_secure8.json

The first file is `ditto-spu distill`'s JSON summary, the second `ditto-spu eval --secure N`'s
report (docs/distillation.md has both commands).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMMAND = (
    "ditto-spu distill --teacher minilm --mode ditto --policy configs/policy_minilm_ditto.json "
    "--data builtin --extra-text stdlib --out runs/minilm --stage1-steps 1250 --stage2-steps 0 "
    "--lr-stage1 3e-4 --time-budget 18 --seq-len 64 --batch-size 16 --checkpoint-every 500"
)
OUT = Path(__file__).resolve().parents[1] / "ditto_spu" / "results" / "qad_minilm_ditto.json"


def main(distill_path: str, eval_path: str) -> int:
    distill = json.loads(Path(distill_path).read_text())
    ev = json.loads(Path(eval_path).read_text())
    shipped = {
        "model": "minilm",
        "mode": ev["mode"],
        "command": COMMAND,
        "eval_command": "ditto-spu eval --teacher minilm --student runs/minilm --mode ditto "
                        "--policy configs/policy_minilm_ditto.json --data builtin --secure 8",
        "student_dir": "runs/minilm/student",
        "distill_minutes": distill["elapsed_s"] / 60.0,
        "held_out_sentences": ev["examples"],
        "held_out_cosine_before": ev["cosine_before"],
        "held_out_cosine_mean": ev["cosine_after"],
        "held_out_cosine_min": ev["cosine_after_min"],
        **{k: ev[k] for k in ev if "neighbour" in k or "spearman" in k},
        "secure_examples": ev.get("secure_examples"),
        "secure_vs_emulation_cosine_min": ev.get("secure_vs_emulation_min"),
        "secure_vs_emulation_rel_l2_max": ev.get("secure_vs_emulation_rel_l2_max"),
        "secure_vs_fp32_teacher_mean": ev.get("secure_vs_fp32_teacher_mean"),
        "sources": [distill_path, eval_path],
    }
    OUT.write_text(json.dumps(shipped, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
