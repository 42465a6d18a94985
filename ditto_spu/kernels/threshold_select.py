"""Select by a public threshold: y·[x ≥ c] (or [x > c], or their complements), exact.

``threshold_select`` — inputs [x, y]: x and y secret fixed-point tensors of one ring
FXPl[f], broadcast-compatible shapes; output y·s(x) in that ring, of the broadcast
shape, where s is a 0/1 step at the public constant c. This is the compiler's
``multiply(convert(compare(x, c)), y)`` (PUMA's GeLU is three of them,
:func:`ditto_spu.approx.gelu_puma`): the comparison decided in a reduced ring, the
product by the 0/1 indicator exact — no truncation, the indicator is an integer share.

Params: ``constant`` c; ``strict`` (False: the step [x ≥ c], True: [x > c]); ``below``
(False: the step itself; True: its complement, [x < c] resp. [x ≤ c]); ``bound`` — the
calibrated public bound on |x − c| that sets the reduced width; ``resolution_bits`` r
(default :data:`DEFAULT_RESOLUTION_BITS`).

Protocol (C = trunc(c·2^f), c as the ring encodes a public constant; T = C, or C + 1
when strict: on the grid, x > c ⟺ X ≥ C + 1; d = f − r; k the reduced width of
:func:`.reduce_max.reduced_width` for the bound, d + k ≤ l):

1. z = X − T + 2^(d+1), a public constant added to s0 (:func:`.rss.add_public_to_s0`):
   local, exact;
2. every component cut to bits [d, d+k) (:func:`.compare.reduce_components`): a k-bit
   sharing of z̃ = ⌊z / 2^d⌋ − δ, δ ∈ {0, 1, 2} (the downcast identity);
3. b = msb(z̃) = [z̃ < 0] as boolean RSS (:func:`.compare.msb`, 2 + ⌈log2(k−1)⌉
   rounds); the step is ¬b (:func:`.compare.not_gate`, local), the complement b itself;
4. bit injection of the bit into Z_2^l (:func:`.compare.bit_injection`, 1 round);
5. select: RSS of bit·y, the local cross terms reshared (:func:`.compare.multiply_sum`,
   1 round, no truncation).

Error (the only one): z̃ ≥ 0 whenever X ≥ T, and z̃ < 0 whenever X − T < −2^(d+1). So
with W = 2^(1−r) the step is EXACT for every x outside [t − W, t), t = T·2^−f (t = c
as encoded; strict: c + 1 ulp), and may be either value inside that window just below
the threshold: it never misses x ≥ c (x > c), it may report true up to W below it. The
complement is 1 minus the same step. The window sits below c on purpose: PUMA's top
piece x − sextic grows fast above 3 (W = 1/8 above it would add up to 0.053), while
below each break both neighbouring pieces approximate GeLU. Measured on PUMA's GeLU
with r = 4 (W = 1/8), every element in a window taking the other value: the result
moves from the formula's by at most 0.0018 below −4, 0.0074 below −1.95, 0.0159 below
3 (the size of the formula's own jump at that break), and its error against the erf
GeLU stays below 0.021, as the formula's own. The fixed-point semantics
(:mod:`ditto_spu.semantics.interpreter`) models the step as exact.

Cost per element at width k in ring Z_2^l, all parties: k bits (sharing A) + 3 bits per
AND gate of the sign bit (:func:`and_gates_of_msb`, 45 for k = 17) + 6·l (injection)
+ 3·l (reshare) — :func:`bits_per_element`: 728 bits (91 bytes) for FXP64 at k = 17
(bound 2000, r = 4); rounds :func:`rounds` = msb_rounds(k) + 2 = 8 (both checked in the
tests).

A |x − c| beyond ``bound`` may wrap in Z_2^k and the step be arbitrary: checked mode
opens x (tests and debugging only) and raises :class:`~ditto_spu.errors.RangeError`
naming the kernel; the emulator's range report records |x − c| against the bound
(:func:`.reduce_max.check_bound`), and calibration sets the bound from it.

Selected (:func:`selects`) in mixed-ring programs only (single-ring FXP64 baselines
keep SPU's comparison), for a secret fixed-point x under a policy comparison bound that
gives a reduced ring narrower than the ring.

Security: only the messages of :mod:`.compare` (the masked sharing of A, AND gates), of
:mod:`.ot` (bit injection) and one reshare (party i's cross terms padded by
pad(i, i−1) − pad(i, i+1), sent to party i−1, which lacks pad(i, i+1)) are sent; each
is uniform given its receiver's own components and PRG streams. The indicator exists
only as shares; nobody learns which side of c an element lies on. Tested in
tests/kernels/test_kernel_threshold_select.py on what party 2 receives (its own
components and streams fixed, the secret on either side of c), a test that fails when
role 0's sharing mask is missing or reused.
"""

from __future__ import annotations

import numpy as np

from ..errors import PlanError
from ..rings import RingSpec
from ..shares import AShare, is_fixed_point
from .base import PartyContext
from .compare import bit_injection, msb, msb_rounds, multiply_sum, not_gate, reduce_components
from .reduce_max import check_within, reduced_width
from .rss import add_public_to_s0, encode_public_constant

NAME = "threshold_select"
DEFAULT_RESOLUTION_BITS = 4


def selects(ring: RingSpec | None, *, mixed: bool, bound: float | None, secret: bool, float_operand: bool,
            resolution_bits: int = DEFAULT_RESOLUTION_BITS) -> bool:
    """Whether ``y·[x ≥ c]`` (or >, <, ≤) runs as this kernel: a mixed-ring program, a
    secret fixed-point x, and a calibrated ``bound`` on |x − c| that gives a reduced
    width narrower than the ring (else SPU's full-ring comparison is the same cost)."""
    if ring is None or not mixed or bound is None or not secret or not float_operand:
        return False
    widths = reduced_width(ring, bound, resolution_bits)
    return widths is not None and widths[1] < ring.bits


def window(params: dict) -> float:
    """Width W = 2^(1−r) of the window below the threshold where the step may take
    either value (r from ``params``, default :data:`DEFAULT_RESOLUTION_BITS`)."""
    return 2.0 ** (1 - int(params.get("resolution_bits", DEFAULT_RESOLUTION_BITS)))


def and_gates_of_msb(width: int) -> int:
    """AND gates per element of :func:`.compare.msb` at ``width`` bits: k − 1 generate
    bits, then per level of the prefix tree two gates per pair (one on the last level)."""
    lanes = width - 1
    gates = lanes
    while lanes > 1:
        pairs = lanes // 2
        gates += pairs if lanes == 2 else 2 * pairs
        lanes = pairs + lanes % 2
    return gates


def bits_per_element(width: int, ring_bits: int) -> int:
    """Bits sent per element, all parties (see the module doc)."""
    return width + 3 * and_gates_of_msb(width) + 9 * ring_bits


def rounds(width: int) -> int:
    """Message depth of one call at reduced width k."""
    return msb_rounds(width) + 2


def encode_threshold(constant: float, ring: RingSpec) -> int:
    """C = trunc(c·2^f): a public constant as SPU (and the semantics) encode it."""
    return encode_public_constant(constant, ring, f"{NAME}: the threshold")


def _settings(x: AShare, y: AShare, params: dict):
    try:
        constant = float(params["constant"])
        bound = float(params["bound"])
        r = int(params.get("resolution_bits", DEFAULT_RESOLUTION_BITS))
    except (KeyError, TypeError, ValueError):
        raise PlanError(
            f"{NAME}: params need numeric 'constant' and 'bound' (optional 'strict', 'below', "
            f"'resolution_bits'), got {params}"
        ) from None
    if not is_fixed_point(x.dtype) or not is_fixed_point(y.dtype):
        raise PlanError(f"{NAME} compares and selects fixed-point values, got {x.dtype} and {y.dtype}")
    if x.ring != y.ring:
        raise PlanError(f"{NAME}: x and y must share a ring, got {x.ring} and {y.ring}")
    try:
        shape = np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise PlanError(f"{NAME}: shapes {x.shape} and {y.shape} do not broadcast") from None
    widths = reduced_width(x.ring, bound, r)
    if widths is None:
        raise PlanError(f"{NAME}: |x - c| <= {bound:g} at resolution 2^-{r} does not fit a reduced ring of {x.ring}")
    return constant, bound, widths, tuple(shape)


def threshold_select(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x, y] -> [y·[x ≥ c]] (``strict``: [x > c]; ``below``: the complement), in y's
    ring, of the broadcast shape of x and y."""
    if len(inputs) != 2:
        raise PlanError(f"{NAME} takes [x, y], got {len(inputs)} inputs")
    x, y = inputs
    constant, bound, (drop, width), shape = _settings(x, y, params)
    if ctx.checked:
        check_within(ctx, x, constant, bound, NAME)
    threshold = encode_threshold(constant, x.ring) + (1 if params.get("strict") else 0)
    z = add_public_to_s0(x.components, ctx.rank, (1 << (drop + 1)) - threshold)  # X − T + 2^(d+1)
    below = msb(ctx, reduce_components(z, drop, width), width)  # [z̃ < 0]
    bit = below if params.get("below") else not_gate(ctx, below)
    b = bit_injection(ctx, bit, x.ring.dtype).reshape(x.shape + (2,))
    out = multiply_sum(ctx, b, y.components)
    return [AShare(y.ring, shape, y.dtype, out.reshape(shape + (2,)))]
