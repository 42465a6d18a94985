"""The call-kernel registry: the kernels the compiler hands ops to, by name.

A call kernel is ``fn(ctx, [AShare...], params) -> [AShare...]``; a Plan's KernelStep names
it. The built-ins are listed here; :func:`register_call_kernel` adds more.
"""

from __future__ import annotations

from typing import Callable

from ..errors import RingError
from . import divide, exp_taylor, local_sum, matmul, multiply, reduce_max, rsqrt, threshold_select

_CALL_KERNELS: dict[str, Callable] = {
    matmul.NAME: matmul.matmul_fxp32,
    multiply.NAME: multiply.multiply,
    local_sum.NAME: local_sum.sum_local,
    reduce_max.MAX_NAME: reduce_max.max_reduced_ring,
    reduce_max.CLAMP_NAME: reduce_max.clamp_reduced_ring,
    exp_taylor.NAME: exp_taylor.exp_taylor_fxp32,
    divide.NAME: divide.divide_calibrated,
    rsqrt.NAME: rsqrt.rsqrt_calibrated,
    threshold_select.NAME: threshold_select.threshold_select,
}


def register_call_kernel(name: str, fn: Callable) -> Callable:
    """Register an n-ary kernel ``fn(ctx, [AShare...], params) -> [AShare...]`` by name."""
    _CALL_KERNELS[name] = fn
    return fn


def registered_call_kernels() -> dict[str, Callable]:
    return dict(_CALL_KERNELS)


def find_call_kernel(name: str) -> Callable:
    try:
        return _CALL_KERNELS[name]
    except KeyError:
        raise RingError(
            f"no registered kernel named {name!r}; registered: {sorted(_CALL_KERNELS)}"
        ) from None
