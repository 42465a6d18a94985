"""`ditto-spu demo` / `make demo`: the main job.

Secure inference of MiniLM (real all-MiniLM-L6-v2 weights) on a sentence, three simulated
parties, in one run:

1. ``ditto-puma``: Ditto's mixed FXP32/FXP64 rings and kernels with PUMA's accurate
   approximations and a policy calibrated for the stock weights — correct with no
   retraining. Its sentence embedding's cosine to plaintext FP32 and its agreement with
   the fixed-point emulation (cosine and relative L2) are printed;
2. ``puma`` on the same sentence: the baseline's wall time and bytes, and the speed-up;
3. ``ditto`` (quad GeLU: needs quantization-aware distillation): its cost measured now,
   and what distillation reaches, quoted from the results shipped with the package
   (``ditto_spu/results/qad_minilm_ditto.json``, written by the documented QAD run).

``--student DIR`` runs a distilled student (a model or ``distill`` run directory) instead of
step 1, in the mode and policy it records (:mod:`ditto_spu.models.saved`). With ``--small``:
the hand-built plan FXP32 matmul -> upcast -> FXP64 exp -> downcast -> FXP32 matmul, with
every step's cost.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from .configs_dir import config_path
from .errors import DittoError

DEMO_TEXT = "The three servers compute the answer without ever seeing the sentence or the model."
DEMO_SEQ_LEN = 32
STOCK_MODE = "ditto-puma"
STOCK_POLICY = str(config_path("policy_minilm_ditto_puma.json"))
QAD_POLICY = str(config_path("policy_minilm_ditto.json"))
QAD_RESULTS = "qad_minilm_ditto.json"


def qad_results() -> dict:
    """The shipped results of the documented MiniLM QAD run (command, held-out figures)."""
    try:
        return json.loads(resources.files("ditto_spu.results").joinpath(QAD_RESULTS).read_text())
    except FileNotFoundError:
        raise DittoError(
            f"the package ships no ditto_spu/results/{QAD_RESULTS}: reinstall ditto-spu "
            "(pip install .) or run the QAD of docs/distillation.md"
        ) from None


def run_demo(args) -> int:
    if getattr(args, "small", False):
        return run_small_demo(args)
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from .infer import secure_inference
    from .models import load_model

    hf_logging.set_verbosity_error()  # the checkpoint's unused position_ids, loaded three times
    student = getattr(args, "student", None)
    console = Console(stderr=True)
    runs = {}
    with console.status("loading MiniLM") as status:
        def run(label, model, mode, policy, **kw):
            status.update(f"{label}: compiling and running three parties")
            runs[label] = secure_inference(
                model, mode, DEMO_TEXT, seq_len=DEMO_SEQ_LEN, policy=policy, model_name="minilm",
                progress=lambda message: status.update(f"{label}: {message}"), **kw,
            )
            return runs[label]

        status.update("loading MiniLM")
        minilm = load_model("minilm")  # one copy for every run of the demo
        if student:
            from .models.saved import model_directory, read_run_settings

            student = str(model_directory(student))
            settings = read_run_settings(student)
            mode = settings.mode if settings else "ditto"
            policy = getattr(args, "policy", None) or (settings.policy if settings else QAD_POLICY)
            teacher = settings.teacher if settings and settings.teacher else "minilm"
            main = run("student", student, mode, policy, reference_model=minilm if teacher == "minilm" else teacher)
        else:
            main = run(STOCK_MODE, minilm, STOCK_MODE, getattr(args, "policy", None) or STOCK_POLICY)
        puma = run("puma", minilm, "puma", None, emulate=False)
        ditto_cost = None if student else run("ditto", minilm, "ditto", QAD_POLICY, emulate=False)
    qad = qad_results()
    summary = {
        **main.summary(),
        "text": DEMO_TEXT,
        "puma_wall_s": puma.wall_s,
        "puma_bytes_sent": puma.bytes_sent,
        "speedup_vs_puma": puma.wall_s / main.wall_s,
        "bytes_ratio_vs_puma": max(puma.bytes_sent) / max(main.bytes_sent),
        "ditto_wall_s": ditto_cost.wall_s if ditto_cost else main.wall_s,
        "ditto_bytes_sent": ditto_cost.bytes_sent if ditto_cost else main.bytes_sent,
        "qad": qad,
    }
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2, default=float))
        return 0
    _print_demo(main, puma, ditto_cost, qad, student)
    return 0


def _mb(bytes_sent) -> str:
    return f"{max(bytes_sent) / 1e6:.0f} MB"


def _print_demo(main, puma, ditto_cost, qad, student) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console()
    what = f"distilled student {student}" if student else "stock pretrained weights"
    out.print(f"[bold]Secure inference of MiniLM, 3-party ABY3 simulation[/bold] ({what})")
    out.print(f"  text: {DEMO_TEXT!r} ({main.tokens} tokens, seq {main.seq_len})")
    out.print(f"  mode {main.mode}: {main.segments} SPU segments in {escape(', '.join(main.rings))}, "
              f"{main.casts} ring casts, FXP32 matmuls by ditto-spu's own kernel")
    out.print(f"  cosine to plaintext FP32 model:        [bold]{main.cosine_fp32:.4f}[/bold]")
    out.print(f"  vs its fixed-point emulation:          cosine {main.cosine_emulation:.6f}, "
              f"relative L2 {main.rel_l2_emulation:.2e}")
    out.print(f"  {main.mode}: wall {main.wall_s:.1f} s, {_mb(main.bytes_sent)} sent by the busiest party")
    out.print(f"  puma (same sentence, same run): wall {puma.wall_s:.1f} s, {_mb(puma.bytes_sent)} "
              f"→ [bold]{puma.wall_s / main.wall_s:.2f}× faster[/bold], "
              f"{max(puma.bytes_sent) / max(main.bytes_sent):.2f}× fewer bytes")
    if ditto_cost is not None:
        out.print(f"  ditto (quad GeLU, needs distillation): wall {ditto_cost.wall_s:.1f} s "
                  f"({puma.wall_s / ditto_cost.wall_s:.2f}× puma), {_mb(ditto_cost.bytes_sent)}")
        out.print(f"    with the distilled student: held-out mean cosine to FP32 "
                  f"{qad['held_out_cosine_mean']:.3f} (worst {qad['held_out_cosine_min']:.3f}, "
                  f"{qad['held_out_sentences']} sentences; {qad['distill_minutes']:.0f} min of QAD on 2 cores)")
        if qad.get("neighbour_agreement_after") is not None:
            out.print(f"    semantic search: top-1 neighbour agreement with FP32 "
                      f"{100 * qad['neighbour_agreement_after']:.0f} %, similarity Spearman "
                      f"{qad['similarity_spearman_after']:.3f}")
        out.print(f"    make it: {qad['command']}")
        out.print(f"    then:    ditto-spu demo --student {qad['student_dir']}")


def run_small_demo(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference
    from .simulation import Simulator

    console = Console()
    with console.status("compiling the mixed-ring plan and running 3 parties..."):
        plan = build_mixed_ring_plan()
        inputs = demo_inputs()
        outputs, stats = Simulator().run(plan, inputs)
    expected = plaintext_reference(inputs)
    got = outputs["y"]
    abs_err = float(np.max(np.abs(got - expected)))
    rel_err = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    summary = {
        "plan": [s.name for s in plan.steps],
        "max_abs_error": abs_err,
        "relative_l2_error": rel_err,
        **stats.summary(),
        "steps": stats.step_table(),
    }
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=2, default=float))
        return 0
    table = Table(title="mixed-ring plan: y = exp(x·W1) · W2   (3-party ABY3 simulation)")
    for col in ("step", "kind", "ring", "wall s", "bytes sent P0/P1/P2", "rounds"):
        table.add_column(col)
    for row in stats.step_table():
        table.add_row(
            row["step"],
            row["kind"],
            escape(row["ring"]),
            f"{row['wall_s']:.3f}",
            " / ".join(f"{b:,}" for b in row["bytes_sent"]),
            str(row["rounds"]),
        )
    console.print(table)
    console.print(
        f"output shape {got.shape}; max |error| vs plaintext float64 = {abs_err:.4g}, "
        f"relative L2 error = {rel_err:.3g}"
    )
    console.print(
        f"total: wall {stats.wall_s:.2f} s, bytes sent per party {stats.bytes_sent}, "
        f"rounds ≤ {stats.rounds} (kernel rounds {stats.kernel_rounds})"
    )
    return 0
