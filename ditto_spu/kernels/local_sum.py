"""Sum of a secret tensor over some axes, computed locally on the shares.

A replicated sharing is linear: if party i holds (s_i, s_{i+1}) of x, then summing each
of its two components over the same axes (mod 2^l) gives (Σ s_i, Σ s_{i+1}), a
replicated sharing of Σ x. No message, no randomness, and the result is exactly the
ring element SPU's ``reduce`` with an ``add`` body computes: the same sum of the same
encoded values, so the fixed-point semantics of the op does not change (the emulator
and the training model keep modelling an exact sum).

Why a kernel: SPU 0.9.5 evaluates such a reduce as a tree of strided slices and adds,
each with its runtime's per-op cost: a LayerNorm mean over 128×768 takes ~40–50 ms there,
the softmax denominator over 12×128×128 ~80 ms (3 parties, 2 cores), where numpy sums the
components in about a millisecond.

Cost: 0 rounds, 0 bytes. Valid for any ring; the sum must fit the ring like any add
(the emulator's overflow report covers it as it covers the op).

Security: nothing is sent or received; each party computes a deterministic function of
components it already holds.

Selected (:func:`selects`) for a secret fixed-point operand in a mixed-ring program only:
the single-ring baselines (PUMA, MPCFormer) keep stock SPU's execution throughout. The
same kernel would speed them up by the same absolute time; benchmarks/README.md states it.
"""

from __future__ import annotations

import numpy as np

from ..errors import PlanError
from ..rings import RingSpec
from ..shares import AShare
from .base import PartyContext

NAME = "sum_local"


def selects(ring: RingSpec | None, *, mixed: bool, secret: bool, float_operand: bool) -> bool:
    """Whether a reduce-add runs as this kernel (the rule the compiler and the
    fixed-point semantics share): a secret fixed-point operand in a mixed-ring program."""
    return ring is not None and mixed and secret and float_operand


def sum_local(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x] -> [Σ x over params['axes']] (those axes removed), same ring."""
    if len(inputs) != 1:
        raise PlanError(f"{NAME} takes 1 input, got {len(inputs)}")
    (x,) = inputs
    ndim = len(x.shape)
    try:
        axes = tuple(sorted(int(a) + ndim if int(a) < 0 else int(a) for a in params["axes"]))
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{NAME}: params need 'axes' (a list of dimensions), got {params}") from None
    if len(set(axes)) != len(axes) or any(not 0 <= a < ndim for a in axes):
        raise PlanError(f"{NAME}: axes {list(params['axes'])} do not fit a tensor of shape {x.shape}")
    word = x.ring.dtype
    components = x.components.sum(axis=axes, dtype=word) if axes else x.components
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [AShare(x.ring, shape, x.dtype, np.ascontiguousarray(components))]
