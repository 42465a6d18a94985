"""Per-layer FXP32 fraction bits of a model under a mode, from calibration sentences.

:func:`calibrate_model` runs the fixed-point emulator (:mod:`ditto_spu.quant`) of the
model's secure forward function under the mode on the sentences and picks, for each
layer, the largest fraction bits no value or product of the set overflows (with
``margin_bits`` to spare). Models without a tokenizer (the random-initialised configs)
take the word-hash ids of :mod:`.tokens`: their ranges come from the weights and the
embedding, not from which ids the words receive.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from ..errors import DittoError


def calibrate_model(
    model_name: str,
    mode_name: str,
    texts: Sequence[str],
    seq_len: int,
    *,
    margin_bits: int = 1,
    candidate_bits: Sequence[int] = tuple(range(6, 17)),
    group_by: str = "layer",
    policy=None,
    batch: int = 4,
    progress: Optional[Callable[[str], None]] = None,
):
    """(mode, :class:`~ditto_spu.quant.CalibrationResult`) of ``model_name`` under
    ``mode_name`` on ``texts`` (``batch`` sentences per emulated call); ``policy`` is the
    base policy (default: the default policy)."""
    from ..policy import load_policy
    from ..quant import calibrate_detailed
    from . import load_mode, load_model, one_hot_ids, prepare_params, secure_forward
    from .tokens import tokenize

    if not texts:
        raise DittoError("calibration needs at least one text")
    mode = load_mode(mode_name)
    if not mode.dtypes.mixed:
        raise DittoError(f"mode {mode.name!r} has no low-precision (FXP32) part; nothing to calibrate")
    if progress:
        progress(f"loading {model_name} ({mode.name} mode), {len(texts)} calibration text(s), seq len {seq_len}")
    model = load_model(model_name)
    fwd = secure_forward(model, mode)
    params = prepare_params(model.params, mode)
    ids, mask = tokenize(model_name, model, list(texts), seq_len)
    low = mode.dtypes.low_dtype
    step = max(1, batch)
    batches = [
        (params, one_hot_ids(ids[i:i + step], model.config.vocab_size, low), mask[i:i + step])
        for i in range(0, len(texts), step)
    ]
    result = calibrate_detailed(
        fwd,
        load_policy(policy),
        batches,
        margin_bits=margin_bits,
        candidate_bits=list(candidate_bits),
        group_by=group_by,
        progress=progress,
    )
    return mode, result
