"""The wrap-count protocol (PROTOCOLS.md §2) and the exact ring change built on it.

Input: RSS (s0, s1, s2) over Z_2^l of a value x' with msb(x') = 0, i.e. x' in
[0, 2^(l-1)) (callers add a public bias to get there). Over the integers

    s0 + s1 + s2 = x' + 2^l · t,   t = c + (m_a OR m_b) = u + m_b·(1 - m_a),

where P0 (holding s0, s1) knows a = s0 + s1 mod 2^l, its carry c, m_a = msb(a) and
u = c + m_a, and P1, P2 (both holding s2) know m_b = msb(s2). Because msb(x') = 0, the
sum a + s2 wraps exactly when m_a or m_b is set.

:func:`wrap_count_shares` gives the parties an RSS of t over Z_2^w in ONE round, with the
1-round 3-party OT variant (both receivers know the choice bit m_b):

    pair P2–P0 draws (t0, r0, r1), pair P0–P1 draws (t1, q0, q1)       [ctx.prg]
    P0: m(e) = t(e) - t0 - t1, t(0) = u, t(1) = u + 1 - m_a
    P0 -> P1: (m(0) + r0, m(1) + r1)      P2 -> P1: r_{m_b}
    P0 -> P2: (m(0) + q0, m(1) + q1)      P1 -> P2: q_{m_b}
    P1, P2: t2 = m(m_b) = (received candidate m_b) - (received pad)

Shares: P0 (t0, t1), P1 (t1, t2), P2 (t2, t0). Cost: P0 sends 4 words, P1 and P2 one
word each: 6·w bits per element, one round; P0 receives nothing.

Word width: the callers only ever use 2^j·t mod 2^m, which depends on t mod 2^(m-j), so
t is shared over Z_2^w with the smallest w in {8, 16, 32, 64} such that w >= m - j: the
FXP32 -> FXP64 upcast (j = 32, m = 64) sends 32-bit words, 192 bits per element instead of
the 384 of 64-bit words; a truncation by d <= 16 bits within a ring (m - j = d) sends
16-bit words, 96 bits per element, and by d <= 8 bits 8-bit words, 48 bits.

Security (semi-honest, one corrupted party): P0 receives nothing. P1 sees
m(m_b) + r_{m_b} and r_{m_b}, whose difference t2 = t - t0 - t1 is masked by t0 (seed
P2–P0, unknown to P1), and m(1-m_b) + r_{1-m_b} masked by r_{1-m_b} (same seed, never
sent to P1). Those three words are uniform and independent of x given P1's own shares.
P2 is symmetric with (q, t1) and seed P0–P1.
"""

from __future__ import annotations

import numpy as np

from .ot import ot_roles, shared_choice_ot
from .rss import add_public_to_s0, shift_left, shift_right

UINT: dict[int, np.dtype] = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.uint32), 64: np.dtype(np.uint64)}


def word_bits_for(dst_bits: int, multiplier_log2: int) -> int:
    """Smallest word width (8, 16, 32 or 64) that holds t mod 2^(dst_bits - multiplier_log2)."""
    needed = dst_bits - multiplier_log2
    return next(w for w in (8, 16, 32, 64) if w >= needed)


def _msb(values: np.ndarray) -> np.ndarray:
    bits = 8 * values.dtype.itemsize
    return values >> values.dtype.type(bits - 1)


def _p0_candidates(s0: np.ndarray, s1: np.ndarray, word: np.dtype):
    """P0's view of the wrap count: u = c + m_a and m_a, as words of dtype ``word``."""
    a = s0 + s1  # wraps mod 2^l
    carry = (a < s0).astype(word)
    m_a = _msb(a).astype(word)
    return carry + m_a, m_a


def wrap_count_shares(ctx, biased: np.ndarray, word_bits: int) -> np.ndarray:
    """RSS of the wrap count t of a biased sharing, over Z_2^word_bits (one round).

    ``biased`` is this party's (..., 2) components of x' with msb(x') = 0. Returns this
    party's (..., 2) components of t: (t_rank, t_{rank+1}). The transfer is
    :func:`.ot.shared_choice_ot` with candidates t(0) = u, t(1) = u + 1 − m_a and choice m_b.
    """
    word = UINT[word_bits]
    shape = biased.shape[:-1]
    flat = np.ascontiguousarray(biased.reshape(-1, 2))
    n = flat.shape[0]
    if n == 0:
        return np.zeros(shape + (2,), dtype=word)
    role, party = ot_roles(ctx)
    if role == 0:
        u, m_a = _p0_candidates(flat[:, 0], flat[:, 1], word)
        shares = shared_choice_ot(ctx, 0, party, n, word, candidates=(u, u + word.type(1) - m_a))
    else:
        # role 1 holds (s'1, s'2), role 2 holds (s'2, s'0): both know m_b = msb(s'2)
        m_b = _msb(flat[:, 1] if role == 1 else flat[:, 0]).astype(bool)
        shares = shared_choice_ot(ctx, role, party, n, word, choice=m_b)
    return shares.reshape(shape + (2,))


def exact_convert(
    ctx,
    components: np.ndarray,
    *,
    dst_bits: int,
    right_shift: int = 0,
    left_shift: int = 0,
) -> np.ndarray:
    """Shares of about X/2^d (then times 2^s) over Z_2^m from shares of X over Z_2^l, 1 round.

    With d = ``right_shift``, s = ``left_shift``, B = 2^(l-2), h = 2^(d-1) (0 if d = 0):

        x' = X + B + h  (needs x' in [0, 2^(l-1)), i.e. -B - h <= X < B - h)
        Y  = [sum_i lift_m(floor(s_i'/2^d)) - 2^(l-d)·t - B/2^d + [d > 0]] · 2^s  mod 2^m

    Since sum_i floor(s_i'/2^d) = floor(x'/2^d) + 2^(l-d)·t - delta, delta in {0,1,2}:
    d = 0 gives Y = X·2^s exactly; d > 0 gives Y/2^s - X/2^d in (-1.5, +1.5].
    Requires m >= l, d <= l - 2. Returns (..., 2) components in Z_2^m.
    """
    src_bits = 8 * components.dtype.itemsize
    if dst_bits < src_bits or not 0 <= right_shift <= src_bits - 2:
        raise ValueError(
            f"exact_convert needs dst_bits >= {src_bits} and 0 <= right_shift <= {src_bits - 2}, "
            f"got dst_bits={dst_bits}, right_shift={right_shift}"
        )
    d = right_shift
    rounding_half = (1 << (d - 1)) if d > 0 else 0
    bias = 1 << (src_bits - 2)
    biased = add_public_to_s0(components, ctx.rank, bias + rounding_half)

    wrap_multiplier_log2 = src_bits - d
    t = wrap_count_shares(ctx, biased, word_bits_for(dst_bits, wrap_multiplier_log2))

    dst_word = UINT[dst_bits]
    lifted = shift_right(biased, d).astype(dst_word)
    lifted -= shift_left(t.astype(dst_word), wrap_multiplier_log2)
    centring = 1 if d > 0 else 0  # moves the error from (-2.5, 0.5] to (-1.5, 1.5]
    out = add_public_to_s0(lifted, ctx.rank, -(bias >> d) + centring)
    return shift_left(out, left_shift)
