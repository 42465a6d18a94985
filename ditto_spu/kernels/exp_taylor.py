"""exp of the softmax's shifted, cut-off scores, computed in FXP32 and handed to FXP64.

Ditto's softmax takes x − max(x) and the cut-off max(·, −c) in the low ring and then
casts up for exp, sum and division in the high ring. The exp is the expensive part: SPU's
Taylor exp ``(1 + x/2^n)^(2^n)`` in FM64 costs ~164 send actions and ~3,700 bits per
element here (n = 5), because each of its n squarings is a 64-bit multiply with a
multi-round truncation. Its input is known to lie in [−c, 0] (c = 14 for PUMA's
cut-off), so every intermediate r_k = (1 + x/2^n)^(2^k) lies in [0, 1]: 32-bit words
hold it with F = 14 fraction bits and room to spare.

Protocol, for x ∈ FXP32[f] with party i holding (x_i, x_{i+1}):

1. r_0 = 1 + x/2^n at F fraction bits: x is first moved to F − n fraction bits (local
   left shift when f ≤ F − n, exact; otherwise the wrap-count truncation of
   :mod:`.rescale`, 1 round), then 2^F is added to s_0 (public constant, local);
2. n squarings r_{k+1} = r_k², each the :mod:`.multiply` kernel's x·x: local product,
   reshare (1 round, 96 bits per element), wrap-count truncation by F bits in 16-bit
   words (1 round, 96 bits), error within ±1.5 ulps of 2^−F, centred;
3. the exact upcast FXP32[F] → FXP64[g] of :mod:`.upcast` (1 round, 192 bits), g ≥ F the
   destination's fraction bits.

Cost, all parties, per element: n·192 + 192 bits and 2n + 1 rounds (n = 5: 1,152 bits,
11 rounds), plus 1 round and 48 bits (f ≤ F − n + 8) when f > F − n.

Valid range: the product of a squaring must stay below 2^30 at scale 2^2F, i.e. |r_k| < 2,
and the Taylor form only decreases while r_0 = 1 + x/2^n ≥ 0. So −2^n ≤ x < ln 2; the
kernel accepts x ≤ 1/2 (:data:`HIGHEST_VALID_INPUT`): x − max(x) exceeds 0 by up to
3·2^−r when the max kernel returns an entry within its resolution below the true max
(0.19 at r = 4), and there r_k ≤ e^(1/2) < 2. The compiler selects the kernel only where
the program guarantees the range (the cut-off clamp's constant ≥ −2^n on x − max(x));
checked mode opens x and raises RangeError outside it.

Error against the semantics below: each truncation is within 1.5 ulps of the exact
square and the model rounds to nearest, so a step differs by at most 2 ulps of 2^−F, and
a difference is at most doubled by each later squaring (r ≤ 1): at most 2·(2^n − 1) ulps
(62 ulps = 3.8e−3 for n = 5), plus 2^(n+1) ulps when x/2^n itself needs a truncation
(f > F − n). Typical errors are far smaller (the truncation errors are centred).

Semantics (the emulator and the training model, :func:`emulate`): r = round(x/2^n, F) + 1
then n times r = round(r², F), rounding modelled by its mean (nearest), as SPU's Taylor exp
is modelled at its own ring's f. The difference from SPU's FM64 exp at f = 18: the
squarings keep 14 instead of 18 fraction bits, ~1e-3 absolute near x = 0 against the
Taylor form's own error of ~6e-3 at x = −1 ((31/32)^32 vs e^−1).

Security: the kernel sends only the messages of the multiply kernel's reshare and of the
wrap-count protocol (truncations and upcast), each uniform given the receiver's own
components and PRG streams (:mod:`.multiply`, :mod:`.wrap`); nothing is opened.
"""

from __future__ import annotations

import numpy as np

from ..errors import PlanError, RangeError
from ..rings import RingSpec
from ..shares import AShare
from .base import PartyContext
from .casts import run_cast
from .multiply import multiply
from .rss import add_public_to_s0, open_for_check

NAME = "exp_taylor_fxp32"
ITERS = 5  # PUMA's and Ditto's fxp_exp_iters; the kernel's own constant, not SPU's config
FRAC_BITS = 14  # r_k ≤ 1: r_k²·2^28 stays well inside FXP32's product limit 2^30
HIGHEST_VALID_INPUT = 0.5  # above 0 by the max kernel's slack; r_k ≤ e^(1/2) < 2


def lowest_valid_input(iters: int = ITERS) -> float:
    """The smallest x the kernel accepts: r_0 = 1 + x/2^n ≥ 0 (below it the Taylor form
    stops decreasing: (1 − 64/32)^32 = 1)."""
    return -(2.0**iters)


def selects(
    ring: RingSpec | None, *, source_ring: RingSpec | None, cutoff: float | None, shifted: bool, slack: float = 0.0
) -> bool:
    """Whether an exp runs as this kernel (the rule the compiler and the semantics share):
    an FXP64 exp of a value up-cast from FXP32 that is the cut-off clamp (constant
    ``cutoff`` ≥ −2^n) of x − max(x) (``shifted``), so the input lies in [cutoff, slack]
    (``slack``: how far the max kernel's result may lie below the true max)."""
    return (
        slack <= HIGHEST_VALID_INPUT
        and ring is not None
        and ring.field == "FM64"
        and ring.frac_bits >= FRAC_BITS
        and source_ring is not None
        and source_ring.field == "FM32"
        and shifted
        and cutoff is not None
        and lowest_valid_input() <= cutoff <= 0.0
    )


def emulate(arith, x, scope: str):
    """The kernel's value for the emulator and the training model (see the module doc):
    SPU's Taylor exp as the semantics models it (:meth:`~ditto_spu.semantics.fxp.Fxp.exp_taylor`,
    straight-through gradients of the true exp), at the kernel's ring FXP32[F] and with its
    own n. The largest product is the last squaring's (every r_k ≤ 1 on the valid range,
    and the squares grow beyond it), which the range report records."""
    ring = RingSpec("FM32", FRAC_BITS)
    out = arith.fxp(ring).exp_taylor(x, ITERS)
    arith.check_range(scope, ring, "product", out)
    return out


def exp_taylor_fxp32(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x] (FXP32, −2^n ≤ x ≤ 1/2) -> [exp_Taylor(x)] in FXP64[params['frac_bits']]."""
    if len(inputs) != 1:
        raise PlanError(f"{NAME} takes 1 input, got {len(inputs)}")
    (x,) = inputs
    try:
        dst = RingSpec("FM64", int(params["frac_bits"]))
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{NAME}: params need 'frac_bits' (the FXP64 destination's), got {params}") from None
    if x.ring.field != "FM32" or dst.frac_bits < FRAC_BITS:
        raise PlanError(f"{NAME} maps FXP32 to FXP64 with at least {FRAC_BITS} fraction bits, got {x.ring} -> {dst}")
    if ctx.checked:
        _check_input(ctx, x)
    work = RingSpec("FM32", FRAC_BITS)
    scaled = run_cast(ctx, x, RingSpec("FM32", FRAC_BITS - ITERS)).share  # x/2^n at F bits
    r = AShare(work, x.shape, x.dtype, add_public_to_s0(scaled.components, ctx.rank, 1 << FRAC_BITS))
    for _ in range(ITERS):
        (r,) = multiply(ctx, [r, r], {})
    return [run_cast(ctx, r, dst).share]


def _check_input(ctx: PartyContext, x: AShare) -> None:
    """CHECKED MODE ONLY (reveals x to all parties): −2^n ≤ x ≤ 1/2."""
    values = open_for_check(ctx, x).astype(np.float64) * 2.0**-x.ring.frac_bits
    low, high = float(np.min(values, initial=0.0)), float(np.max(values, initial=0.0))
    if low < lowest_valid_input() or high > HIGHEST_VALID_INPUT:
        raise RangeError(
            f"{NAME} on party {ctx.rank}: input in [{low:.6g}, {high:.6g}], but the kernel needs "
            f"[{lowest_valid_input():g}, {HIGHEST_VALID_INPUT:g}] (the softmax's x − max(x) after its cut-off); the program "
            "that selected it does not guarantee that — this is a compiler bug, please report it"
        )
