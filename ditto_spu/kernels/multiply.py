"""Elementwise secret product in one fixed-point ring: x·y (both secret) or c·x (c a
public splat constant), with a deterministic truncation.

Protocol, for x, y ∈ FXPl[f] with party i holding (x_i, x_{i+1}) and likewise y:

* x·y: local z_i = x_i·y_i + x_i·y_{i+1} + x_{i+1}·y_i (mod 2^l), a 3-out-of-3 additive
  sharing of x·y at scale 2^(2f); ABY3's reshare (:func:`.rss.reshare`: zero-sharing from
  the pairwise PRG, party i sends its term to party i−1): one round, l bits per element
  per party;
* c·x: C = trunc(c·2^f) (SPU's encoding of a public constant, toward zero); each party
  multiplies both components by C — already a replicated sharing of C·x at scale 2^(2f),
  no message;
* then the wrap-count truncation 2f → f (:mod:`.rescale`: one round, 6·w bits per
  element with w the smallest of 8/16/32/64 bits holding f, error ≤ 1.5 ulps centred,
  no failure probability).

Cost per element, all parties: x·y 3·l + 6·w bits in 2 rounds; c·x 6·w bits in 1 round.
FXP32[f=8]: 144 / 48 bits; FXP64[f=18]: 384 / 192 bits. Stock SPU 0.9.5 measured here
(3 parties, 98,304 elements): FM32 x·y 256 bits and 14 send actions, FM32 c·x 160 bits
and 8; FM64 x·y 416 bits, FM64 c·x 224 bits — its truncation is a multi-round
probabilistic protocol.

Semantics: the product exact at scale 2^(2f), then a truncation whose error is centred
within ±1.5 ulps — what the fixed-point semantics already models for SPU's products
(``TrainingArithmetic.product``), so selecting this kernel changes neither emulation nor
training. Valid while |x·y·2^(2f)| < 2^(l−2) − 2^(f−1) (SPU's safe range); checked mode
opens the operands and raises :class:`~ditto_spu.errors.RangeError` beyond it.

Selected (:func:`selects`, the rule compiler and semantics share) in mixed-ring programs
for float products of two secrets with at least ``DEFAULT_MIN_ELEMENTS`` elements, and
for every product of a secret and a public splat (a scalar in the jaxpr, a broadcast
constant in StableHLO) whatever its size — one round where SPU's truncation takes
several, so even LayerNorm's 128 means are worth it. A division by a splat constant c
is such a product: x·(1/c), with 1/c encoded toward zero as SPU encodes it
(:meth:`~ditto_spu.semantics.fxp.Fxp.divide_by_public`). The single-ring baselines keep
SPU's multiply.

Security: the reshare's message from party i to party i−1 is its term masked by the pad
it shares with party i+1, which the receiver does not know (uniform from its view); c·x
sends nothing before the truncation; the truncation's messages are uniform by
:mod:`.wrap`'s argument.
"""

from __future__ import annotations

import numpy as np

from ..errors import PlanError
from ..rings import RingSpec
from ..shares import AShare
from .base import PartyContext
from .casts import run_cast
from .rss import encode_public_constant, open_for_check, require_product_fits, reshare

NAME = "multiply"
DEFAULT_MIN_ELEMENTS = 4096


def selects(
    ring: RingSpec | None,
    *,
    mixed: bool,
    elements: int,
    secret_operands: int,
    public_splat: bool,
    float_result: bool,
    min_elements: int = DEFAULT_MIN_ELEMENTS,
) -> bool:
    """Whether an elementwise multiply runs as this kernel (see the module doc):
    ``secret_operands`` is 2, or 1 with the other operand a public splat."""
    return (
        ring is not None
        and mixed
        and float_result
        and 2 * ring.frac_bits <= ring.bits - 4
        and ((secret_operands == 2 and elements >= min_elements) or (secret_operands == 1 and public_splat))
    )


def encode_constant(c: float, ring: RingSpec) -> int:
    """SPU's encoding of a public constant in ``ring``: trunc(c·2^f), toward zero."""
    return encode_public_constant(c, ring, f"{NAME}: the public factor")


def multiply(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x, y] -> [x·y], or [x] with ``params['constant'] = c`` -> [c·x], same ring and shape."""
    if len(inputs) == 2:
        x, y = inputs
        if y.ring != x.ring or y.shape != x.shape:
            raise PlanError(f"{NAME} multiplies shares of one ring and shape, got {x.ring}{x.shape} and {y.ring}{y.shape}")
        if ctx.checked:
            xv = open_for_check(ctx, x).astype(np.float64)
            yv = xv if y is x else open_for_check(ctx, y).astype(np.float64)  # a square opens once
            _check_range(ctx, xv * yv, x.ring)
        xc, yc = x.components, y.components
        z = xc[..., 0] * (yc[..., 0] + yc[..., 1]) + xc[..., 1] * yc[..., 0]  # wraps mod 2^l
        components = reshare(ctx, np.ascontiguousarray(z))
    elif len(inputs) == 1 and "constant" in params:
        (x,) = inputs
        c = encode_constant(float(params["constant"]), x.ring)
        if ctx.checked:
            _check_range(ctx, open_for_check(ctx, x).astype(np.float64) * c, x.ring)
        components = x.components * x.ring.dtype.type(c % (1 << x.ring.bits))
    else:
        raise PlanError(f"{NAME} takes [x, y], or [x] with params 'constant'; got {len(inputs)} inputs, params {params}")
    ring = x.ring
    wide = AShare(RingSpec(ring.field, 2 * ring.frac_bits), x.shape, x.dtype, components)
    return [run_cast(ctx, wide, ring).share]


def _check_range(ctx: PartyContext, exact_scaled: np.ndarray, ring: RingSpec) -> None:
    """CHECKED MODE ONLY (the operands were opened to all parties)."""
    require_product_fits(
        ctx, exact_scaled, ring, kernel=NAME, advice="use fewer fraction bits for this scope (calibrate) or a wider ring"
    )
