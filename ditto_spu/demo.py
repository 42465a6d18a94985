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

``student=DIR`` runs a distilled student (a model or ``distill`` run directory) instead of
step 1, in the mode and policy it records (:mod:`ditto_spu.models.saved`).
:func:`run_small_demo`: the hand-built plan FXP32 matmul -> upcast -> FXP64 exp -> downcast
-> FXP32 matmul, with every step's cost. Printing is :mod:`ditto_spu.cli.demo`'s.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Callable, Optional

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


@dataclasses.dataclass
class DemoResult:
    """The demo's runs: ``main`` (ditto-puma on stock weights, or the student), ``puma`` on
    the same sentence, ``ditto_cost`` (quad GeLU on stock weights: its cost only; None
    with a student) and the shipped QAD figures."""

    main: object  # InferenceResult
    puma: object
    ditto_cost: Optional[object]
    qad: dict
    student: Optional[str] = None

    def summary(self) -> dict:
        main, puma, ditto_cost = self.main, self.puma, self.ditto_cost
        return {
            **main.summary(),
            "text": DEMO_TEXT,
            "puma_wall_s": puma.wall_s,
            "puma_bytes_sent": puma.bytes_sent,
            "speedup_vs_puma": puma.wall_s / main.wall_s,
            "bytes_ratio_vs_puma": max(puma.bytes_sent) / max(main.bytes_sent),
            "ditto_wall_s": ditto_cost.wall_s if ditto_cost else main.wall_s,
            "ditto_bytes_sent": ditto_cost.bytes_sent if ditto_cost else main.bytes_sent,
            "qad": self.qad,
        }


def run_demo(student: Optional[str] = None, policy=None,
             progress: Optional[Callable[[str], None]] = None) -> DemoResult:
    """Run the demo's secure inferences (see the module docstring); ``progress`` gets one
    line per phase."""
    from transformers.utils import logging as hf_logging

    from .infer import resolve_model, secure_inference
    from .models import load_model

    hf_logging.set_verbosity_error()  # the checkpoint's unused position_ids, loaded three times
    say = progress or (lambda message: None)

    def run(label, model, mode, policy, **kw):
        say(f"{label}: compiling and running three parties")
        return secure_inference(
            model, mode, DEMO_TEXT, seq_len=DEMO_SEQ_LEN, policy=policy, model_name="minilm",
            progress=lambda message: say(f"{label}: {message}"), **kw,
        )

    say("loading MiniLM")
    minilm = load_model("minilm")  # one copy for every run of the demo
    if student:
        student, mode, policy, settings = resolve_model(student, None, policy)
        teacher = settings.teacher if settings and settings.teacher else "minilm"
        main = run("student", student, mode, policy or QAD_POLICY,
                   reference_model=minilm if teacher == "minilm" else teacher)
    else:
        main = run(STOCK_MODE, minilm, STOCK_MODE, policy or STOCK_POLICY)
    puma = run("puma", minilm, "puma", None, emulate=False)
    ditto_cost = None if student else run("ditto", minilm, "ditto", QAD_POLICY, emulate=False)
    return DemoResult(main, puma, ditto_cost, qad_results(), student)


def run_small_demo():
    """The hand-built mixed-ring plan on three simulated parties: (plan, stats, summary)."""
    from .demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference
    from .simulation import Simulator

    plan = build_mixed_ring_plan()
    inputs = demo_inputs()
    outputs, stats = Simulator().run(plan, inputs)
    expected = plaintext_reference(inputs)
    got = outputs["y"]
    summary = {
        "plan": [s.name for s in plan.steps],
        "output_shape": list(got.shape),
        "max_abs_error": float(np.max(np.abs(got - expected))),
        "relative_l2_error": float(np.linalg.norm(got - expected) / np.linalg.norm(expected)),
        **stats.summary(),
        "steps": stats.step_table(),
    }
    return plan, stats, summary
