"""Three-party oblivious transfer in which both receivers know the choice bit.

The building block of the wrap count (:mod:`.wrap`) and of bit injection
(:mod:`.compare`). One party, the *sender* (role 0), knows two candidate words c(0), c(1)
per element; the other two (roles 1 and 2) both know the choice bit e. Afterwards the
three parties hold a replicated sharing (RSS) of c(e) over Z_2^w, and nobody learned
anything else. One round:

    pair role2–role0 draws (t0, r0, r1), pair role0–role1 draws (t1, q0, q1)   [ctx.prg]
    role 0: m(e) = c(e) − t0 − t1 for e in {0, 1}
    role 0 → role 1: (m(0) + r0, m(1) + r1)      role 2 → role 1: r_e
    role 0 → role 2: (m(0) + q0, m(1) + q1)      role 1 → role 2: q_e
    roles 1 and 2: t2 = m(e) = (received candidate e) − (received pad)

Shares: role 0 (t0, t1), role 1 (t1, t2), role 2 (t2, t0); t0 + t1 + t2 = c(e).
Cost: role 0 sends 4 words, roles 1 and 2 one word each: 6·w bits per element.

Roles rotate from call to call (every party advances ``ctx.next_rotation()`` the same
way), so the party that sends 4 words changes and traffic is balanced over a plan. RSS is
cyclic: the party of rank role+r holds (s'_role, s'_role+1) with s'_j = s_(j+r), so the
returned components are an ordinary RSS in rank order.

Security (semi-honest, one corrupted party): role 0 receives nothing. Role 1 sees
m(e) + r_e and r_e, whose difference t2 = c(e) − t0 − t1 is masked by t0 (seed
role2–role0, unknown to role 1), and m(1−e) + r_{1−e}, masked by r_{1−e} (same seed,
never sent to role 1). Those three words are uniform and independent of the candidates
given role 1's own view. Role 2 is symmetric with (q, t1) and seed role0–role1.
"""

from __future__ import annotations

import numpy as np

from .base import as_array

WORLD_SIZE = 3


def ot_roles(ctx) -> tuple:
    """(this party's role, role → rank function) for the next OT call (advances the
    rotation on every party alike)."""
    rotation = ctx.next_rotation() if hasattr(ctx, "next_rotation") else 0

    def party(role_index: int) -> int:
        return (role_index + rotation) % WORLD_SIZE

    return (ctx.rank - rotation) % WORLD_SIZE, party


def shared_choice_ot(ctx, role: int, party, n: int, word, *, candidates=None, choice=None) -> np.ndarray:
    """RSS of c(e) over Z_2^w (``word`` = np.uint32 / np.uint64), one round.

    Role 0 passes ``candidates = (c0, c1)`` (arrays of n words); roles 1 and 2 pass
    ``choice`` (n booleans, the same on both). Returns this party's (n, 2) components.
    """
    word = np.dtype(word)
    if role == 0:
        c0, c1 = candidates
        t0, r0, r1 = ctx.prg.shared(party(2), (3, n), word)
        t1, q0, q1 = ctx.prg.shared(party(1), (3, n), word)
        m0 = np.asarray(c0, word) - t0 - t1
        m1 = np.asarray(c1, word) - t0 - t1
        # Each candidate is one-time padded for its receiver by a pad that receiver does
        # not hold; the receiver unlocks only the candidate its choice bit selects.
        to_1 = np.concatenate([m0 + r0, m1 + r1])
        to_2 = np.concatenate([m0 + q0, m1 + q1])
        ctx.link.exchange({party(1): to_1.tobytes(), party(2): to_2.tobytes()}, [])
        return np.stack([t0, t1], axis=-1)
    e = np.asarray(choice, bool)
    if role == 1:
        t1, q0, q1 = ctx.prg.shared(party(0), (3, n), word)
        # q_e lets role 2 unlock its candidate; it learns nothing new (it knows e).
        got = ctx.link.exchange({party(2): np.where(e, q1, q0).tobytes()}, [party(0), party(2)])
        candidate = as_array(got[party(0)], word, (2, n))
        t2 = np.where(e, candidate[1], candidate[0]) - as_array(got[party(2)], word, (n,))
        return np.stack([t1, t2], axis=-1)
    t0, r0, r1 = ctx.prg.shared(party(0), (3, n), word)
    got = ctx.link.exchange({party(1): np.where(e, r1, r0).tobytes()}, [party(0), party(1)])
    candidate = as_array(got[party(0)], word, (2, n))
    t2 = np.where(e, candidate[1], candidate[0]) - as_array(got[party(1)], word, (n,))
    return np.stack([t2, t0], axis=-1)
