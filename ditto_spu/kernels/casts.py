"""The cast registry: which kernel converts a share from one RingSpec to another.

The built-in kernels (downcast, upcast, rescale) are listed here, in lookup order; at most
one of them applies to any (source, destination) pair. :func:`register_cast_kernel` adds
one in front (a later registration wins). :func:`run_cast` is what the runtime and the
call kernels use to change a share's ring.
"""

from __future__ import annotations

import time

from ..errors import RingError
from ..rings import RingSpec
from ..shares import AShare
from . import downcast, rescale, upcast
from .base import CastKernel, KernelResult, PartyContext

_REGISTRY: list[CastKernel] = [
    upcast.upcast_fxp32_to_fxp64_fewer_frac_bits,
    upcast.upcast_fxp32_to_fxp64,
    rescale.rescale_fewer_frac_bits_fxp64_wide,
    rescale.rescale_fewer_frac_bits_fxp64,
    rescale.rescale_fewer_frac_bits_fxp64_w16,
    rescale.rescale_fewer_frac_bits_fxp64_w8,
    rescale.rescale_fewer_frac_bits_fxp32,
    rescale.rescale_fewer_frac_bits_fxp32_w16,
    rescale.rescale_fewer_frac_bits_fxp32_w8,
    rescale.rescale_more_frac_bits,
    downcast.downcast_fxp64_to_fxp32,
]


def register_cast_kernel(kernel: CastKernel) -> CastKernel:
    """Add a kernel to the registry, in front of the others (it wins where patterns overlap)."""
    _REGISTRY.insert(0, kernel)
    return kernel


def registered_cast_kernels() -> list[CastKernel]:
    return list(_REGISTRY)


def find_cast_kernel(src: RingSpec, dst: RingSpec) -> CastKernel:
    """The kernel that converts ``src`` to ``dst``; RingError naming both if none."""
    for k in _REGISTRY:
        if k.applies(src, dst):
            return k
    raise RingError(
        f"no registered cast kernel converts {src} to {dst}; registered: "
        + ", ".join(k.name for k in _REGISTRY)
    )


def run_cast(ctx: PartyContext, share: AShare, dst: RingSpec) -> KernelResult:
    """Find and run the cast kernel for ``share.ring -> dst``, measuring its cost."""
    kernel = find_cast_kernel(share.ring, dst)
    before = ctx.link.stats.snapshot()
    t0 = time.perf_counter()
    out = kernel(ctx, share, dst)
    seconds = time.perf_counter() - t0
    return KernelResult(out, ctx.link.stats.since(before), seconds)
