"""select_kernels on a whole mixed-ring softmax: exp and division go to their kernels."""

import math

from ditto_spu.plan import KernelCall
from ditto_spu.policy import Policy
from ditto_spu.rings import FXP64
from passes import compile_stablehlo

SOFTMAX = """
func.func public @main(%arg0: tensor<2x8xf16>) -> tensor<2x8xf32> {
  %cst = stablehlo.constant dense<0xFC00> : tensor<f16>
  %0 = stablehlo.reduce(%arg0 init: %cst) applies stablehlo.maximum across dimensions = [1] : (tensor<2x8xf16>, tensor<f16>) -> tensor<2xf16>
  %1 = stablehlo.broadcast_in_dim %0, dims = [0] : (tensor<2xf16>) -> tensor<2x8xf16>
  %2 = stablehlo.subtract %arg0, %1 : tensor<2x8xf16>
  %cst_0 = stablehlo.constant dense<-1.400000e+01> : tensor<f16>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f16>) -> tensor<2x8xf16>
  %4 = stablehlo.maximum %2, %3 : tensor<2x8xf16>
  %5 = stablehlo.convert %4 : (tensor<2x8xf16>) -> tensor<2x8xf32>
  %6 = stablehlo.exponential %5 : tensor<2x8xf32>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.reduce(%DENOM init: %cst_1) applies stablehlo.add across dimensions = [1] : (tensor<2x8xf32>, tensor<f32>) -> tensor<2xf32>
  %8 = stablehlo.reshape %7 : (tensor<2xf32>) -> tensor<2x1xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0, 1] : (tensor<2x1xf32>) -> tensor<2x8xf32>
  %10 = stablehlo.divide %6, %9 : tensor<2x8xf32>
  return %10 : tensor<2x8xf32>
}
"""


def _calls(text, policy=None):
    plan = compile_stablehlo(text, policy or Policy(), compile=False).plan
    return [(s.kernel, s.params) for s in plan.steps if isinstance(s, KernelCall)]


def test_the_division_by_the_sum_of_the_exp_kernel_becomes_the_division_kernel():
    calls = _calls(SOFTMAX.replace("%DENOM", "%6"))
    assert [k for k, _ in calls] == [
        "max_reduced_ring", "clamp_reduced_ring", "exp_taylor_fxp32", "sum_local", "divide_calibrated",
    ]
    params = calls[-1][1]
    # eight entries, the max at most 3·2^-4 below the true one: the sum is in [0.5, 8·e^(3/16)·1.01]
    assert params["broadcast_dims"] == [0]
    assert params["low"] == 0.5 and math.isclose(params["high"], 8 * math.exp(3 / 16) * 1.01)


def test_a_division_whose_range_the_structure_does_not_give_stays_in_spu():
    # the sum of the exp's input (values down to the cut-off, −14) has no such range
    calls = _calls(SOFTMAX.replace("%DENOM", "%5"))
    assert "divide_calibrated" not in [k for k, _ in calls]
    # the single-ring baselines keep SPU's division (and everything else)
    assert _calls(SOFTMAX.replace("%DENOM", "%6"), Policy(low=FXP64())) == []
