"""Secure FXP32 matrix product (stablehlo.dot_general) over ABY3 replicated shares.

Why our own: SPU 0.9.5 computes FM32 matmuls with Eigen's uint32 GEMM, which is slow
(and crashes without the aligned allocator); exact float64 BLAS on signed limbs
(:mod:`.ring_matmul`: two GEMMs per ring product) is an order of magnitude faster on
this class of machine.

Protocol (semi-honest ABY3 multiplication, then truncation), for x ∈ FXP32[f] with
party i holding (x_i, x_{i+1}) and likewise y:

1. local: z_i = x_i·y_i + x_i·y_{i+1} + x_{i+1}·y_i  (mod 2^32) — a 3-out-of-3
   additive sharing of x·y at scale 2^(2f); computed as the sum of two ring products
   (x_i + x_{i+1})·y_i + x_i·y_{i+1} (the same z_i; the share sum goes on the smaller
   operand), contracted together: 4·M·K·N float64 multiply-adds (:mod:`.ring_matmul`);
2. re-randomise with a zero sharing from the pairwise PRG: c_i = z_i + r_{i-1,i} − r_{i,i+1}
   (Σ c_i = Σ z_i); party i sends c_i to party i−1 — one round, 32 bits per output
   element per party — and holds (c_i, c_{i+1}): a fresh replicated sharing;
3. truncate 2f → f with the registered wrap-count truncation
   (:mod:`.rescale`: one round, 6·w bits per element with w = 8 for f ≤ 8, 16 for
   f ≤ 16 — the wrap count is only needed mod 2^f —, error ≤ 1.5 ulps, no failure
   probability; valid while |x·y·2^(2f)| < 2^30 − 2^(f−1), SPU's own safe range).

Total: 2 rounds; 96 + 6·w bits per output element over all parties (192 at f = 9..15). Integer tensors skip
step 3. An optional third input, a bias (``params['bias_dims']``: where its dimensions
land in the product, as in StableHLO's broadcast_in_dim), is added to the components
after step 3 — local and exact; the compiler fuses a dense layer's bias add this way. Security: c_i goes to party i−1, which knows r_{i-1,i} but not r_{i,i+1}, so
c_i is uniform from its view; the truncation's messages are uniform by its own argument.
"""

from __future__ import annotations

import numpy as np

from ..errors import PlanError
from ..rings import RingSpec
from ..shares import AShare, is_fixed_point
from .base import PartyContext
from .casts import run_cast
from .ring_matmul import batched_operands, dot_general_u32
from .rss import open_for_check, require_product_fits, reshare

NAME = "matmul_fxp32"
DEFAULT_MIN_MACS = 1 << 16


def selects(ring: RingSpec, *, macs: int, both_secret: bool, float_result: bool, min_macs: int = DEFAULT_MIN_MACS) -> bool:
    """Whether a dot_general in ``ring`` runs as this kernel (the rule
    :mod:`passes.select_kernels` applies and the fixed-point semantics follows): an FXP32
    ring whose products fit (2f ≤ l − 4), both operands secret (public × secret needs no
    multiplication protocol: SPU keeps it), a floating result and at least ``min_macs``
    multiply-accumulates (below that SPU's own matmul is as fast)."""
    return (
        ring is not None
        and ring.field == "FM32"
        and 2 * ring.frac_bits <= ring.bits - 4
        and both_secret
        and float_result
        and macs >= min_macs
    )


def emulate(arith, exact_product, ring: RingSpec, scope: str):
    """Semantics of the kernel for the emulator and the training model: the product
    exact at scale 2^(2f) (step 1 is exact in Z_2^32), checked against the ring's product
    limit, then the wrap-count truncation, whose error is centred within ±1.5 ulps
    (modelled by its mean: nearest)."""
    return arith.product(exact_product, ring, scope)


def _dims(params) -> tuple:
    try:
        return tuple(tuple(int(a) for a in params[k]) for k in ("lhs_batch", "rhs_batch", "lhs_contract", "rhs_contract"))
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{NAME}: params need lhs_batch, rhs_batch, lhs_contract, rhs_contract, got {params}") from None


def matmul_fxp32(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x, y] -> [dot_general(x, y)], or [x, y, bias] -> [dot_general(x, y) + bias] with
    the bias broadcast along ``params['bias_dims']``, in the same FXP32 ring (see the
    module doc)."""
    if len(inputs) not in (2, 3):
        raise PlanError(f"{NAME} takes 2 inputs (or 3 with a bias), got {len(inputs)}")
    x, y = inputs[:2]
    bias = inputs[2] if len(inputs) == 3 else None
    ring = x.ring
    if ring.field != "FM32" or y.ring != ring or (bias is not None and bias.ring != ring):
        rings = ", ".join(str(s.ring) for s in inputs)
        raise PlanError(f"{NAME} multiplies FXP32 shares of one ring, got {rings}")
    dims = _dims(params)
    out_dtype = params.get("out_dtype", x.dtype)
    if ctx.checked and is_fixed_point(out_dtype):
        _check_product_range(ctx, x, y, dims)
    lhs, rhs = _local_terms(x.components, y.components)
    lb, rb, lc, rc = dims
    # the two terms sit on the trailing axis of both operands: contract it too
    z = dot_general_u32(lhs, rhs, (lb, rb, lc + (x.components.ndim - 1,), rc + (y.components.ndim - 1,)))
    components = reshare(ctx, np.ascontiguousarray(z))  # z is fresh: re-randomised in place
    if not is_fixed_point(out_dtype):
        out = AShare(ring, z.shape, out_dtype, components)
    else:
        wide = AShare(RingSpec(ring.field, 2 * ring.frac_bits), z.shape, out_dtype, components)
        out = run_cast(ctx, wide, ring).share
    if bias is None:
        return [out]
    return [AShare(ring, out.shape, out.dtype, out.components + _broadcast_bias(bias, params, out.shape))]


def _broadcast_bias(bias: AShare, params: dict, shape: tuple) -> np.ndarray:
    """The bias's components broadcast to the product's shape: bias dimension i lands on
    product dimension ``params['bias_dims'][i]`` (StableHLO's broadcast_in_dim)."""
    try:
        dims = [int(d) for d in params["bias_dims"]]
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{NAME}: a bias needs params 'bias_dims', got {params}") from None
    if len(dims) != len(bias.shape) or len(set(dims)) != len(dims) or any(not 0 <= d < len(shape) for d in dims):
        raise PlanError(f"{NAME}: bias of shape {bias.shape} cannot land on dims {dims} of a {shape} product")
    order = sorted(range(len(dims)), key=dims.__getitem__)
    comps = np.transpose(bias.components, order + [len(dims)])
    expanded = [1] * len(shape)
    for i in order:
        expanded[dims[i]] = bias.shape[i]
    if any(e not in (1, d) for e, d in zip(expanded, shape)):
        raise PlanError(f"{NAME}: bias of shape {bias.shape} does not broadcast to {shape} along dims {dims}")
    return np.broadcast_to(comps.reshape(expanded + [2]), tuple(shape) + (2,))


def _local_terms(xc: np.ndarray, yc: np.ndarray) -> tuple:
    """Step 1's two ring products as operands with a trailing terms axis (see the module
    doc). z_i = x_i·(y_i + y_{i+1}) + x_{i+1}·y_i = (x_i + x_{i+1})·y_i + x_i·y_{i+1}
    (the same sum mod 2^32): the share sum goes on the smaller operand, the other is the
    component array as it is."""
    if xc.size <= yc.size:
        lhs = np.empty_like(xc)
        np.add(xc[..., 0], xc[..., 1], out=lhs[..., 0])
        lhs[..., 1] = xc[..., 0]
        return lhs, yc
    rhs = np.empty_like(yc)
    np.add(yc[..., 0], yc[..., 1], out=rhs[..., 0])
    rhs[..., 1] = yc[..., 0]
    return xc, rhs


def _check_product_range(ctx: PartyContext, x: AShare, y: AShare, dims) -> None:
    """CHECKED MODE ONLY (reveals x and y to all parties): the exact product at scale
    2^(2f) must stay inside SPU's safe range |v| < 2^30 — a product that leaves it wraps
    mod 2^32 and cannot be seen in the ring value afterwards."""
    xv = open_for_check(ctx, x).astype(np.float64)
    yv = open_for_check(ctx, y).astype(np.float64)
    a, b, _ = batched_operands(xv, yv, dims)
    require_product_fits(
        ctx, np.matmul(a, b), x.ring, kernel=NAME,
        advice="use fewer fraction bits for this layer (calibrate) or FXP64",
    )
