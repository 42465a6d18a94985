"""select_kernels on HLO snippets: which maxima go to the reduced-ring kernels."""

import dataclasses

import pytest

from ditto_spu.plan import KernelCall
from ditto_spu.policy import Policy, PolicyError
from ditto_spu.rings import FXP64
from passes import compile_stablehlo

SOFTMAX_SHIFT = """
func.func public @main(%arg0: tensor<2x8xf16>) -> tensor<2x8xf32> {
  %cst = stablehlo.constant dense<0xFC00> : tensor<f16>
  %0 = stablehlo.reduce(%arg0 init: %cst) applies stablehlo.maximum across dimensions = [1] : (tensor<2x8xf16>, tensor<f16>) -> tensor<2xf16>
  %1 = stablehlo.broadcast_in_dim %0, dims = [0] : (tensor<2xf16>) -> tensor<2x8xf16>
  %2 = stablehlo.subtract %arg0, %1 : tensor<2x8xf16>
  %cst_0 = stablehlo.constant dense<-1.400000e+01> : tensor<f16>
  %3 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f16>) -> tensor<2x8xf16>
  %4 = stablehlo.maximum %2, %3 : tensor<2x8xf16>
  %5 = stablehlo.convert %4 : (tensor<2x8xf16>) -> tensor<2x8xf32>
  return %5 : tensor<2x8xf32>
}
"""

TWO_SECRETS_AND_SUM = """
func.func public @main(%arg0: tensor<2x8xf16>, %arg1: tensor<2x8xf16>) -> (tensor<2x8xf16>, tensor<2xf16>) {
  %0 = stablehlo.maximum %arg0, %arg1 : tensor<2x8xf16>
  %cst = stablehlo.constant dense<0.0> : tensor<f16>
  %1 = stablehlo.reduce(%arg0 init: %cst) applies stablehlo.add across dimensions = [1] : (tensor<2x8xf16>, tensor<f16>) -> tensor<2xf16>
  return %0, %1 : tensor<2x8xf16>, tensor<2xf16>
}
"""


def _calls(text, policy):
    plan = compile_stablehlo(text, policy, compile=False).plan
    return [(s.kernel, s.params) for s in plan.steps if isinstance(s, KernelCall)]


def test_softmax_max_and_cutoff_become_kernels_with_their_bound():
    calls = _calls(SOFTMAX_SHIFT, Policy())
    assert calls == [
        ("max_reduced_ring", {"axis": 1, "bound": 2000.0, "shift": True}),  # x − max fused in
        ("clamp_reduced_ring", {"constant": -14.0, "bound": 2000.0}),
    ]


def test_the_shift_is_fused_only_when_the_max_has_no_other_use():
    also_max = SOFTMAX_SHIFT.replace("-> (tensor<2x8xf32>", "-> (tensor<2x8xf32>").replace(
        "func.func public @main(%arg0: tensor<2x8xf16>) -> tensor<2x8xf32> {",
        "func.func public @main(%arg0: tensor<2x8xf16>) -> (tensor<2x8xf32>, tensor<2xf16>) {",
    ).replace("return %5 : tensor<2x8xf32>", "return %5, %0 : tensor<2x8xf32>, tensor<2xf16>")
    calls = _calls(also_max, Policy())
    assert calls[0] == ("max_reduced_ring", {"axis": 1, "bound": 2000.0})


def test_no_bound_fxp64_or_two_secrets_stay_in_spu():
    assert _calls(SOFTMAX_SHIFT, dataclasses.replace(Policy(), comparison_bound=None)) == []
    assert _calls(SOFTMAX_SHIFT, Policy(low=FXP64())) == []  # the single-ring baselines
    # the max of two secrets stays in SPU; the sum goes to the local sum
    assert _calls(TWO_SECRETS_AND_SUM, Policy()) == [("sum_local", {"axes": [1]})]


SUMS = """
func.func public @main(%arg0: tensor<2x3x8xf16>, %arg1: tensor<4xf32>) -> (tensor<3xf16>, tensor<2x3xf16>, tensor<f32>) {
  %zero = stablehlo.constant dense<0.0> : tensor<f16>
  %one = stablehlo.constant dense<1.0> : tensor<f16>
  %zero32 = stablehlo.constant dense<0.0> : tensor<f32>
  %0 = stablehlo.reduce(%arg0 init: %zero) applies stablehlo.add across dimensions = [0, 2] : (tensor<2x3x8xf16>, tensor<f16>) -> tensor<3xf16>
  %1 = stablehlo.reduce(%arg0 init: %one) applies stablehlo.add across dimensions = [2] : (tensor<2x3x8xf16>, tensor<f16>) -> tensor<2x3xf16>
  %2 = stablehlo.reduce(%arg1 init: %zero32) applies stablehlo.add across dimensions = [0] : (tensor<4xf32>, tensor<f32>) -> tensor<f32>
  return %0, %1, %2 : tensor<3xf16>, tensor<2x3xf16>, tensor<f32>
}
"""


def test_sums_with_a_zero_init_become_local_sums_in_mixed_programs_only():
    """Both rings of a mixed program; a non-zero init stays in SPU; an FXP64-only program
    (the baselines) keeps SPU's reduce."""
    assert _calls(SUMS, Policy()) == [("sum_local", {"axes": [0, 2]}), ("sum_local", {"axes": [0]})]
    assert _calls(SUMS, Policy(low=FXP64())) == []


def test_a_scope_override_sets_its_own_bound():
    policy = Policy.from_obj({"comparison_bound": 2000, "overrides": [{"scope": "*", "comparison_bound": 64}]})
    assert [p["bound"] for _, p in _calls(SOFTMAX_SHIFT, policy)] == [64.0, 64.0]
    assert Policy.from_obj(policy.to_obj()) == policy
    with pytest.raises(PolicyError, match="comparison_bound"):
        Policy.from_obj({"comparison_bound": -3})
