"""One secure inference of a model under a mode: compile, simulate, compare.

:func:`secure_inference` takes a stock HF Flax model object (or a name for
:func:`ditto_spu.models.load_model`) and a mode name, tokenizes the text, compiles the
mode's forward function to a mixed-ring Plan, runs it on three simulated parties and
reports how close the secure output is to

* plaintext FP32 (the model with exact GeLU/softmax in float32: what the user wants), and
* the plaintext emulation of the same mode and policy (what the rings should compute:
  this isolates the MPC protocols' own error from the approximations' and quantization's).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .errors import DittoError
from .metrics import cosine_similarity, relative_l2


@dataclasses.dataclass
class InferenceResult:
    model: str
    mode: str
    seq_len: int
    tokens: int
    output_kind: str
    output: np.ndarray
    cosine_fp32: float
    cosine_emulation: float | None
    wall_s: float
    compile_s: float
    bytes_sent: list
    rounds: int
    segments: int
    casts: int
    rings: list
    stats: object = None
    rel_l2_emulation: float | None = None  # ||secure − emulation|| / ||emulation||

    def summary(self) -> dict:
        return {
            "model": self.model,
            "mode": self.mode,
            "seq_len": self.seq_len,
            "tokens": self.tokens,
            "output": self.output_kind,
            "output_shape": list(self.output.shape),
            "cosine_fp32": self.cosine_fp32,
            "cosine_emulation": self.cosine_emulation,
            "rel_l2_emulation": self.rel_l2_emulation,
            "wall_s": self.wall_s,
            "compile_s": self.compile_s,
            "bytes_sent": self.bytes_sent,
            "rounds": self.rounds,
            "segments": self.segments,
            "casts": self.casts,
            "rings": self.rings,
        }


def cosine(a, b) -> float:
    """Cosine similarity of two arrays taken whole (flattened): :func:`.metrics.cosine_similarity`
    of one row each."""
    return float(cosine_similarity(np.ravel(a)[None], np.ravel(b)[None])[0])


def check_seq_len(model, seq_len) -> None:
    """DittoError unless 1 ≤ seq_len ≤ the model's position embeddings."""
    cfg = model.config
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not isinstance(seq_len, int) or seq_len < 1:
        raise DittoError(f"seq_len must be a positive integer, got {seq_len!r}")
    if limit is not None and seq_len > limit:
        raise DittoError(
            f"seq_len {seq_len} exceeds the model's {limit} positions ({type(model).__name__}); "
            f"use --seq-len {limit} or less"
        )


def tokenize(model_name: str, model, text: str, seq_len: int):
    """(input_ids, attention_mask) of shape (1, seq_len), padded / truncated: the model's
    tokenizer where it has one, else the word hash (:mod:`ditto_spu.models.tokens`)."""
    from .models.tokens import tokenize as tokenize_texts

    return tokenize_texts(model_name, model, [text], seq_len)


def resolve_model(model: str, mode=None, policy=None):
    """(model, mode, policy, settings) for a model name or directory: a distilled student's
    directory (:mod:`ditto_spu.models.saved`) runs in the mode and policy it records unless
    given here; anything else defaults to ditto mode. ``settings`` is the student's
    :class:`~ditto_spu.models.saved.RunSettings` (None for a plain model), naming its teacher."""
    import os

    from .models.saved import model_directory, read_run_settings

    settings = None
    if isinstance(model, str) and os.path.isdir(model):
        model = str(model_directory(model))
        settings = read_run_settings(model)
    mode = mode or (settings.mode if settings else "ditto")
    policy = policy or (settings.policy if settings else None)
    return model, mode, policy, settings


def _default_output(model) -> str:
    from .models import model_family

    if model_family(model) == "bert" and type(model).__name__ == "FlaxBertModel":
        return "mean_pooled"  # sentence embedding (MiniLM is a sentence-transformers model)
    return "auto"


def secure_inference(
    model,
    mode: str = "ditto",
    text: str = "Secure inference keeps both the model and the input private.",
    *,
    seq_len: int = 32,
    policy=None,
    model_name: str | None = None,
    output: str | None = None,
    emulate: bool = True,
    runner=None,
    progress=None,
    reference_model=None,
) -> InferenceResult:
    """Run ``model`` (object or name) securely on ``text`` in ``mode``; see the module doc.

    ``runner``: anything with ``run(plan, inputs) -> (outputs, RunStats)`` — the 3-party
    :class:`~ditto_spu.simulation.Simulator` (default) or a
    :class:`~ditto_spu.distributed.driver.NodesRunner` for a three-node deployment.
    ``reference_model``: the FP32 model to compare with (default: ``model`` itself with
    exact GeLU/softmax) — for a distilled student, its teacher.
    """
    import jax

    from .frontend import compile
    from .models import load_mode, load_model, one_hot_ids, prepare_params, secure_forward
    from .policy import load_policy
    from .simulation import Simulator

    step = progress or (lambda message: None)
    if not isinstance(text, str) or not text.strip():
        raise DittoError(f"text must be a non-empty string, got {text!r}; give the sentence to run (--text)")
    if isinstance(model, str):
        model_name = model_name or model
        step(f"loading {model}")
        model = load_model(model)
    model_name = model_name or type(model).__name__
    check_seq_len(model, seq_len)
    mode_obj = load_mode(mode)
    policy = load_policy(policy)
    output = output or _default_output(model)
    ids, mask = tokenize(model_name, model, text, seq_len)

    fwd = secure_forward(model, mode_obj, output=output)
    params = prepare_params(model.params, mode_obj)
    x = one_hot_ids(ids, model.config.vocab_size, mode_obj.dtypes.low_dtype)

    step("compiling to a mixed-ring plan")
    t0 = time.perf_counter()
    program = compile(fwd, params, x, mask, policy=policy)
    compile_s = time.perf_counter() - t0

    step("running three parties (secure inference)")
    inputs = program.flatten_inputs(params, x, mask)
    outputs, stats = (runner or Simulator()).run(program.plan, inputs)
    secure = np.asarray(program.unflatten_outputs(outputs), np.float64)

    step("plaintext references")
    exact = load_mode("exact")
    if isinstance(reference_model, str):
        reference_model = load_model(reference_model)
    ref_model = reference_model if reference_model is not None else model
    ref_fwd = secure_forward(ref_model, exact, output=output)
    ref = np.asarray(
        jax.jit(ref_fwd)(
            prepare_params(ref_model.params, exact),
            one_hot_ids(ids, ref_model.config.vocab_size, np.float32),
            mask,
        ),
        np.float64,
    )
    cos_emulation = rel_emulation = None
    if emulate:
        from .quant import emulate as emulate_fn
        from .quant import raise_on_overflow

        emulated = emulate_fn(fwd, policy)
        emu = emulated.evaluate(params, x, mask)
        # an FXP32 value that left its ring: the secure output is a wrapped ring's, not an
        # answer. (FXP64 is not checked here: PUMA's softmax computes exp on entries below
        # its cut-off whose Taylor powers leave FXP64 by design and are then multiplied by 0.)
        raise_on_overflow(emulated.last_call_report, fields=("FM32",))
        emu = emu[0] if isinstance(emu, (list, tuple)) else emu
        cos_emulation = cosine(secure, emu)
        rel_emulation = relative_l2(secure, emu)

    plan = program.plan
    return InferenceResult(
        model=model_name,
        mode=mode_obj.name,
        seq_len=seq_len,
        tokens=int(mask.sum()),
        output_kind=output,
        output=secure,
        cosine_fp32=cosine(secure, ref),
        cosine_emulation=cos_emulation,
        wall_s=stats.wall_s,
        compile_s=compile_s,
        bytes_sent=stats.bytes_sent,
        rounds=stats.rounds,
        segments=len(plan.segments),
        casts=len(plan.kernel_steps),
        rings=[str(r) for r in plan.rings],
        stats=stats,
        rel_l2_emulation=rel_emulation,
    )
