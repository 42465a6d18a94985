"""Secure comparison in a reduced ring, bit injection, and select.

The non-linear kernels (:mod:`.reduce_max`) decide "is x ≥ y?" on secret fixed-point
values whose calibrated range is far below the ring's. They never compare over the whole
ring.

**Reduced ring (local, free).** A party's components s of x ∈ Z_2^l, cut to bits
[d, d+k) — s ↦ floor(s / 2^d) mod 2^k — form a replicated sharing over Z_2^k of

    x̃ = floor(X / 2^d) − δ,   δ ∈ {0, 1, 2}

whenever d + k ≤ l (the downcast identity of PROTOCOLS.md §1: the wrap term
w·2^(l−d) vanishes mod 2^k). X = x·2^f, so x̃ is x at resolution 2^−(f−d), off by at
most 3 units (one from the floor, two from δ). A difference x̃ − ỹ whose magnitude stays
below 2^(k−1) has its sign in bit k−1. With a calibrated bound |x| ≤ B and r = f − d kept
fraction bits, k = ⌈log2(2·B·2^r + 5)⌉ + 1 suffices: 16 bits for B = 1024, r = 4, where
SPU compares over all 32 or 64 bits.

**Sign bit (msb) of a k-bit sharing**, boolean result, 2 + ⌈log2(k−1)⌉ rounds.
Write z = A + B mod 2^k with A = s0 + s1 (role 0 knows it) and B = s2 (roles 1 and 2
know it). Then msb(z) = A_{k−1} ⊕ B_{k−1} ⊕ c_{k−1}, c_{k−1} the carry into bit k−1 of
A + B. Boolean RSS of A: components (A ⊕ ρ, ρ, 0), ρ from the role0–role1 PRG; role 0
sends A ⊕ ρ to role 2 (round 1). Boolean RSS of B: (0, 0, B), local. Generate
G = A ∧ B (round 2) and propagate P = A ⊕ B on bits 0..k−2; the carry is the prefix
(G, P)_{k−2} ∘ … ∘ (G, P)_0 with (G, P)_hi ∘ (G, P)_lo = (G_hi ⊕ P_hi ∧ G_lo,
P_hi ∧ P_lo), reduced as a balanced tree: one round of ANDs per level, ⌈log2(k−1)⌉
levels, about 3(k−1) AND gates in all (the last level needs the generate bit only).

**Bit slicing.** Boolean shares are packed eight values per byte along the values'
axis (:class:`BoolShare`), and the k bits of a word become k such lanes: an AND or XOR
acts on eight values per byte operation, pads are whole random bytes, and a message is
the packed bytes as they are. The sign bits of 300k differences (a BERT-base softmax
row max) take a few tens of milliseconds of numpy per party.

**AND of boolean RSS** (one round, one bit per gate per party): party i computes
z_i = x_i y_i ⊕ x_i y_{i+1} ⊕ x_{i+1} y_i ⊕ α_i with the zero sharing
α_i = pad(i, i−1) ⊕ pad(i, i+1) and sends z_i to party i−1 — the boolean twin of the
matmul kernel's reshare.

**Bit injection** (boolean bit → arithmetic RSS over Z_2^m, one round, 6·m bits):
b = u ⊕ v with u = b'_0 ⊕ b'_1 (role 0) and v = b'_2 (roles 1 and 2), so the
shared-choice OT of :mod:`.ot` with candidates c(e) = u ⊕ e and choice v gives shares
of b.

**Select** b·y (arithmetic bit times arithmetic value, no truncation, one round): the
local cross terms z_i = b_i y_i + b_i y_{i+1} + b_{i+1} y_i plus an arithmetic zero
sharing, sent to party i−1 (the matmul kernel's steps 1–2).

Security (semi-honest, one corrupted party): every message is either a one-time-padded
word (role 0's A ⊕ ρ, padded by ρ that role 2 does not hold; the OT messages, see
:mod:`.ot`) or a reshared gate output z_i + pad(i, i−1) ⊕ pad(i, i+1) sent to party i−1,
which does not hold pad(i, i+1). Given a receiver's own components and its own PRG
streams, every message it receives is uniform and independent of the secret. Only the
final bits exist, and only as shares; no party learns a comparison outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import as_array
from .ot import ot_roles, shared_choice_ot
from .rss import reshare

WORLD_SIZE = 3


# ---- widths ------------------------------------------------------------------------------
def comparison_width(bound: float, resolution_bits: int) -> int:
    """Ring width k in which differences of two values |x| ≤ ``bound`` at resolution
    2^−r (each off by up to 3 units) keep their sign bit."""
    span = 2.0 * float(bound) * 2.0**resolution_bits + 5.0
    return max(3, math.ceil(math.log2(span)) + 1)


def reduce_components(components: np.ndarray, drop_bits: int, width: int) -> np.ndarray:
    """Local: each component cut to bits [d, d+k) (see the module doc), as uint64 words."""
    word_bits = 8 * components.dtype.itemsize
    if drop_bits < 0 or drop_bits + width > word_bits:
        raise ValueError(f"bits [{drop_bits}, {drop_bits + width}) do not fit a {word_bits}-bit word")
    out = components.astype(np.uint64) >> np.uint64(drop_bits)
    return out & np.uint64((1 << width) - 1)


# ---- boolean RSS, bit-packed -------------------------------------------------------------
@dataclass(frozen=True)
class BoolShare:
    """One party's boolean RSS of 0/1 values, eight per byte.

    ``packed`` has shape (*lead, ceil(count / 8), 2): the last data axis holds ``count``
    values packed little-endian (value j is bit j % 8 of byte j // 8), the final axis the
    party's two components. XOR and AND act on whole bytes, so a gate on n values costs
    n/8 byte operations; bits past ``count`` are don't-cares (random after a gate).
    """

    packed: np.ndarray
    count: int

    def __getitem__(self, index) -> "BoolShare":
        """Index the leading axes only."""
        return BoolShare(self.packed[index], self.count)

    @staticmethod
    def stack(shares, axis: int = 0) -> "BoolShare":
        shares = list(shares)
        return BoolShare(np.stack([s.packed for s in shares], axis=axis), shares[0].count)

    @staticmethod
    def concatenate(shares, axis: int = 0) -> "BoolShare":
        shares = list(shares)
        return BoolShare(np.concatenate([s.packed for s in shares], axis=axis), shares[0].count)

    def unpack(self) -> np.ndarray:
        """Components as 0/1 uint8, shape (*lead, count, 2)."""
        return np.unpackbits(self.packed, axis=-2, count=self.count, bitorder="little")


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """0/1 values (..., n) -> bytes (..., ceil(n/8)), little-endian within a byte."""
    return np.packbits(np.asarray(bits, np.uint8), axis=-1, bitorder="little")


def _bit_pad(ctx, peer: int, shape) -> np.ndarray:
    return ctx.prg.shared(peer, shape, np.uint8)


def and_gates(ctx, x: BoolShare, y: BoolShare) -> BoolShare:
    """Boolean RSS AND (elementwise, same shapes); one round, one bit per gate per party."""
    xa, xb = x.packed[..., 0], x.packed[..., 1]
    ya, yb = y.packed[..., 0], y.packed[..., 1]
    z = (xa & ya) ^ (xa & yb) ^ (xb & ya)
    z ^= _bit_pad(ctx, ctx.prev_rank, z.shape) ^ _bit_pad(ctx, ctx.next_rank, z.shape)
    z = np.ascontiguousarray(z)
    got = ctx.link.exchange({ctx.prev_rank: z.tobytes()}, [ctx.next_rank])
    return BoolShare(np.stack([z, as_array(got[ctx.next_rank], np.uint8, z.shape)], axis=-1), x.count)


def not_gate(ctx, x: BoolShare) -> BoolShare:
    """Boolean RSS NOT (local): flip component 0 on both of its holders (ranks 0 and 2)."""
    out = np.array(x.packed, copy=True)
    column = {0: 0, 1: None, 2: 1}[ctx.rank]
    if column is not None:
        out[..., column] ^= np.uint8(0xFF)
    return BoolShare(out, x.count)


def _bit_slices(words: np.ndarray, width: int) -> np.ndarray:
    """uint64 words (..., n) -> packed lanes (width, ..., ceil(n/8)); lane 0 = least
    significant bit of every word."""
    low_bytes = (width + 7) // 8
    as_bytes = np.ascontiguousarray(words, dtype="<u8").view(np.uint8).reshape(words.shape + (8,))
    bits = np.unpackbits(as_bytes[..., :low_bytes], axis=-1, bitorder="little")[..., :width]
    return pack_bits(np.moveaxis(bits, -1, 0))


def msb(ctx, reduced: np.ndarray, width: int, lead_dims: int = 0) -> BoolShare:
    """Boolean RSS of the sign bit of a k-bit arithmetic RSS ``reduced`` (..., 2).

    The first ``lead_dims`` data axes stay as they are; the rest are flattened into the
    packed axis of the result (see :class:`BoolShare`).
    """
    lead = reduced.shape[:lead_dims]
    flat = reduced.reshape(lead + (-1, 2))
    n = flat.shape[-2]
    mask = np.uint64((1 << width) - 1)
    role, party = ot_roles(ctx)
    # Boolean RSS of A = s'0 + s'1 (role 0) and B = s'2 (roles 1, 2), in role order, as
    # packed lanes (width, *lead, nbytes).
    if role == 0:
        a = _bit_slices((flat[..., 0] + flat[..., 1]) & mask, width)
        rho = _bit_pad(ctx, party(1), a.shape)
        ctx.link.exchange({party(2): (a ^ rho).tobytes()}, [])
        zeros = np.zeros_like(a)
        a_sh, b_sh = np.stack([a ^ rho, rho], -1), np.stack([zeros, zeros], -1)
    elif role == 1:
        b = _bit_slices(flat[..., 1], width)
        rho = _bit_pad(ctx, party(0), b.shape)
        zeros = np.zeros_like(b)
        a_sh, b_sh = np.stack([rho, zeros], -1), np.stack([zeros, b], -1)
    else:
        b = _bit_slices(flat[..., 0], width)
        got = ctx.link.exchange({}, [party(0)])
        a_masked = as_array(got[party(0)], np.uint8, b.shape)
        zeros = np.zeros_like(b)
        a_sh, b_sh = np.stack([zeros, a_masked], -1), np.stack([b, zeros], -1)
    p = a_sh ^ b_sh  # (width, *lead, nbytes, 2)
    if width == 1:
        return BoolShare(p[0], n)
    g = and_gates(ctx, BoolShare(a_sh[: width - 1], n), BoolShare(b_sh[: width - 1], n)).packed
    p_low = p[: width - 1]
    # Balanced prefix tree over lanes 0..k-2 (lane 0 least significant); the last level
    # needs the generate bit only.
    while g.shape[0] > 1:
        pairs = g.shape[0] // 2
        hi, lo = slice(1, 2 * pairs, 2), slice(0, 2 * pairs, 2)
        last = g.shape[0] == 2
        left = p_low[hi] if last else np.concatenate([p_low[hi], p_low[hi]])
        right = g[lo] if last else np.concatenate([g[lo], p_low[lo]])
        both = and_gates(ctx, BoolShare(left, n), BoolShare(right, n)).packed
        new_g = g[hi] ^ both[:pairs]
        new_p = None if last else both[pairs:]
        if g.shape[0] % 2:
            new_g = np.concatenate([new_g, g[-1:]])
            new_p = np.concatenate([new_p, p_low[-1:]])
        g, p_low = new_g, new_p
    return BoolShare(p[width - 1] ^ g[0], n)


def msb_rounds(width: int) -> int:
    """Rounds of :func:`msb` for a k-bit ring."""
    return 2 + max(0, math.ceil(math.log2(width - 1))) if width > 1 else 1


# ---- arithmetic ---------------------------------------------------------------------------
def bit_injection(ctx, bits: BoolShare, word) -> np.ndarray:
    """Arithmetic RSS (*lead, count, 2) over Z_2^m (``word``) of boolean RSS ``bits``; one
    round."""
    word = np.dtype(word)
    unpacked = bits.unpack()
    shape = unpacked.shape[:-1]
    flat = unpacked.reshape(-1, 2)
    n = flat.shape[0]
    role, party = ot_roles(ctx)
    if role == 0:
        u = (flat[:, 0] ^ flat[:, 1]).astype(word)
        out = shared_choice_ot(ctx, 0, party, n, word, candidates=(u, u ^ word.type(1)))
    else:
        v = flat[:, 1] if role == 1 else flat[:, 0]  # b'_2: role 1's second, role 2's first
        out = shared_choice_ot(ctx, role, party, n, word, choice=v.astype(bool))
    return out.reshape(shape + (2,))


def multiply_sum(ctx, a: np.ndarray, b: np.ndarray, axis: int | None = None) -> np.ndarray:
    """RSS of a·b (elementwise, broadcast), summed over ``axis`` if given; no truncation,
    one round. Components (..., 2) of one word dtype."""
    z = a[..., 0] * b[..., 0] + a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]
    if axis is not None:
        z = z.sum(axis=axis, dtype=z.dtype)
    return reshare(ctx, np.ascontiguousarray(z))
