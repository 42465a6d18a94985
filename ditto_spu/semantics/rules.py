"""The ring rule: which ring an op runs in under a policy. Defined once, used by the
compiler (:mod:`passes.annotate_rings`) and by the interpreter of
:mod:`ditto_spu.semantics.interpreter` (the emulator and the training model).

* a function argument of float type lives in ``policy.ring_for(dtype, argument name)``;
* an op runs in ONE ring: the widest (most bits, then most fraction bits) of
  ``policy.ring_for(dtype, scope)`` over the float dtypes the op *defines* — its results
  and, for ops with regions (``while``, ``case``, ``reduce``, ``sort``), every value
  defined inside them, all under the op's own scope. A loop or branch is never split
  across rings: its whole body computes in that one ring;
* an op defining no float (``compare``, float → int ``convert``) runs in the widest ring
  of its float operands;
* an operand living in another ring reaches the op through a cast (a registered cast
  kernel, :func:`ditto_spu.kernels.casts.find_cast_kernel`); public constants are encoded
  in the ring of the op that uses them.

``scope`` is jax's name stack plus the op's name as the StableHLO location carries it
(:func:`hlo_op_name`): ``encoder/layer/3/attention/self/query/dot_general``.
"""

from __future__ import annotations

from typing import Iterable, Optional

from ..policy import Policy
from ..rings import RingSpec

# jaxpr primitives whose StableHLO op carries another name in its location.
_HLO_OP_NAMES = {"scan": "while"}


def hlo_op_name(primitive: str) -> str:
    """The name a jaxpr primitive's StableHLO op carries in its location (``scan`` lowers
    to a ``stablehlo.while`` located at ``.../while``)."""
    return _HLO_OP_NAMES.get(primitive, primitive)


def widest(rings: Iterable[Optional[RingSpec]]) -> Optional[RingSpec]:
    """The ring with the most bits, then the most fraction bits (None for no rings)."""
    rings = [r for r in rings if r is not None]
    if not rings:
        return None
    return max(rings, key=lambda r: (r.bits, r.frac_bits))


def argument_ring(policy: Policy, dtype: str, name: str) -> Optional[RingSpec]:
    """Ring of a function argument of ``dtype`` named ``name`` (None: not a float)."""
    return policy.ring_for(dtype, name)


def op_ring(
    policy: Policy,
    scope: str,
    defined_dtypes: Iterable[str],
    operand_rings: Iterable[Optional[RingSpec]] = (),
) -> Optional[RingSpec]:
    """Ring of an op at ``scope`` that defines values of ``defined_dtypes`` (its results
    and everything inside its regions; integers and booleans are ignored) and reads
    float operands living in ``operand_rings``. None: the op touches no float."""
    ring = widest(policy.ring_for(d, scope) for d in defined_dtypes)
    if ring is None:
        ring = widest(operand_rings)
    return ring
