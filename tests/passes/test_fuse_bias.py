"""select_kernels fuses a bias add into the FXP32 matmul kernel: pass contract and a run."""

import jax.numpy as jnp
import numpy as np
import pytest

from ditto_spu.plan import KernelCall, Segment
from ditto_spu.policy import Policy
from ditto_spu.simulation import sim_jax
from passes import compile_stablehlo

DENSE = """
func.func public @main(%arg0: tensor<64x128xf16>, %arg1: tensor<128x32xf16>, %arg2: tensor<32xf16>) -> (tensor<64x32xf16>, tensor<64x32xf16>) {
  %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0] : (tensor<64x128xf16>, tensor<128x32xf16>) -> tensor<64x32xf16>
  %1 = stablehlo.broadcast_in_dim %arg2, dims = [1] : (tensor<32xf16>) -> tensor<64x32xf16>
  %2 = stablehlo.add %0, %1 : tensor<64x32xf16>
  %3 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0] : (tensor<64x128xf16>, tensor<128x32xf16>) -> tensor<64x32xf16>
  %4 = stablehlo.add %1, %3 : tensor<64x32xf16>
  %5 = stablehlo.multiply %3, %3 : tensor<64x32xf16>
  return %2, %5 : tensor<64x32xf16>, tensor<64x32xf16>
}
"""


def test_bias_add_joins_the_matmul_kernel_only_when_the_product_has_no_other_use():
    plan = compile_stablehlo(DENSE, Policy(), compile=False).plan
    calls = [s for s in plan.steps if isinstance(s, KernelCall)]
    assert [c.kernel for c in calls] == ["matmul_fxp32", "matmul_fxp32"]
    fused, plain = calls
    assert len(fused.input_names) == 3 and fused.params["bias_dims"] == [1]
    assert len(plain.input_names) == 2 and "bias_dims" not in plain.params  # %3 is also squared
    assert any(isinstance(s, Segment) for s in plan.steps)  # %4 and %5 stay in SPU


@pytest.mark.parametrize("flax_style", [False, True])
def test_fused_dense_layer_matches_the_fixed_point_model(flax_style):
    """``x @ w + b`` (a chain of broadcasts) and Flax Dense's ``x @ w + b.reshape(1, -1)``
    (a unit reshape below the broadcast): the bias joins the kernel, the values are the
    fixed-point model's."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 128)).astype(np.float16)
    w = rng.normal(0, 0.1, (128, 32)).astype(np.float16)
    b = rng.normal(0, 1, (32,)).astype(np.float16)

    def dense(x, w, b):
        return (jnp.dot(x, w) + (b.reshape(1, -1) if flax_style else b)).astype(jnp.float32)

    run = sim_jax(dense, Policy())
    got = np.asarray(run(x, w, b))
    calls = [s for s in run.last_program.plan.steps if isinstance(s, KernelCall)]
    assert [len(c.input_names) for c in calls] == [3]  # the bias went in with the product
    # the fixed-point model of FXP32[f=8]: operands on the 2^-8 grid, the exact product
    # rounded back to it (the truncation is within 1.5 ulps), the bias added exactly
    ulp = 2.0**-8

    def q(v):
        return np.round(v.astype(np.float64) / ulp) * ulp

    want = np.round(q(x) @ q(w) / ulp) * ulp + q(b)
    err = np.abs(got - want)
    assert err.max() <= 2 * ulp, err.max() / ulp
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 3e-3  # ±1 ulp noise: ~2e-3
