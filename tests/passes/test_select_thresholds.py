"""select_kernels on HLO snippets: which indicator products go to threshold_select."""

import dataclasses

from ditto_spu.plan import KernelCall, Segment
from ditto_spu.policy import Policy
from ditto_spu.rings import FXP64
from passes import compile_stablehlo

# PUMA's GeLU steps as jax lowers them (gelu_puma in float32 = FXP64), next to an f16
# value so that the program has mixed rings; the last step is written c < x with the
# constant on the left, and one compare of x with 1.5 feeds both a product and an output.
STEPS = """
func.func public @main(%arg0: tensor<2x8xf32>, %arg1: tensor<2x8xf16>) -> (tensor<2x8xf32>, tensor<2x8xf16>, tensor<2x8xi1>) {
  %0 = stablehlo.multiply %arg0, %arg0 : tensor<2x8xf32>
  %cst = stablehlo.constant dense<-4.000000e+00> : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<2x8xf32>
  %2 = stablehlo.compare  GE, %arg0, %1,  FLOAT : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xi1>
  %3 = stablehlo.convert %2 : (tensor<2x8xi1>) -> tensor<2x8xf32>
  %4 = stablehlo.multiply %3, %0 : tensor<2x8xf32>
  %cst_0 = stablehlo.constant dense<3.000000e+00> : tensor<f32>
  %5 = stablehlo.broadcast_in_dim %cst_0, dims = [] : (tensor<f32>) -> tensor<2x8xf32>
  %6 = stablehlo.compare  LT, %5, %arg0,  FLOAT : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xi1>
  %7 = stablehlo.convert %6 : (tensor<2x8xi1>) -> tensor<2x8xf32>
  %8 = stablehlo.subtract %arg0, %0 : tensor<2x8xf32>
  %9 = stablehlo.multiply %8, %7 : tensor<2x8xf32>
  %10 = stablehlo.add %4, %9 : tensor<2x8xf32>
  %cst_1 = stablehlo.constant dense<1.500000e+00> : tensor<f32>
  %11 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<2x8xf32>
  %12 = stablehlo.compare  LE, %arg0, %11,  FLOAT : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xi1>
  %13 = stablehlo.convert %12 : (tensor<2x8xi1>) -> tensor<2x8xf32>
  %14 = stablehlo.multiply %13, %10 : tensor<2x8xf32>
  %15 = stablehlo.add %arg1, %arg1 : tensor<2x8xf16>
  return %14, %15, %12 : tensor<2x8xf32>, tensor<2x8xf16>, tensor<2x8xi1>
}
"""

# Products the rule must leave alone: two indicators, an indicator times a constant, a
# comparison of two secrets, an equality.
NOT_STEPS = """
func.func public @main(%arg0: tensor<2x8xf32>, %arg1: tensor<2x8xf32>, %arg2: tensor<2x8xf16>) -> (tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf16>) {
  %cst = stablehlo.constant dense<-4.000000e+00> : tensor<f32>
  %1 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<2x8xf32>
  %2 = stablehlo.compare  GE, %arg0, %1,  FLOAT : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xi1>
  %3 = stablehlo.convert %2 : (tensor<2x8xi1>) -> tensor<2x8xf32>
  %4 = stablehlo.multiply %3, %3 : tensor<2x8xf32>
  %c2 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %5 = stablehlo.broadcast_in_dim %c2, dims = [] : (tensor<f32>) -> tensor<2x8xf32>
  %6 = stablehlo.multiply %3, %5 : tensor<2x8xf32>
  %7 = stablehlo.compare  GT, %arg0, %arg1,  FLOAT : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xi1>
  %8 = stablehlo.convert %7 : (tensor<2x8xi1>) -> tensor<2x8xf32>
  %9 = stablehlo.multiply %8, %arg1 : tensor<2x8xf32>
  %10 = stablehlo.compare  EQ, %arg0, %1,  FLOAT : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xi1>
  %11 = stablehlo.convert %10 : (tensor<2x8xi1>) -> tensor<2x8xf32>
  %12 = stablehlo.multiply %11, %arg1 : tensor<2x8xf32>
  %13 = stablehlo.add %arg2, %arg2 : tensor<2x8xf16>
  return %4, %6, %9, %12, %13 : tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf16>
}
"""


def _compiled(text, policy):
    return compile_stablehlo(text, policy, compile=False)


def _calls(text, policy):
    return [(s.kernel, s.params) for s in _compiled(text, policy).plan.steps if isinstance(s, KernelCall)]


def _params(c, strict, below, bound=2000.0):
    return {"constant": c, "strict": strict, "below": below, "bound": bound, "resolution_bits": 4}


def test_indicator_products_become_threshold_selects_with_the_direction_normalised():
    calls = [c for c in _calls(STEPS, Policy()) if c[0] == "threshold_select"]
    assert calls == [
        ("threshold_select", _params(-4.0, False, False)),  # x >= -4
        ("threshold_select", _params(3.0, True, False)),  # 3 < x is x > 3; y on the left
        ("threshold_select", _params(1.5, True, True)),  # x <= 1.5: the complement of x > 1.5
    ]


def test_the_kernel_reads_x_and_y_and_unread_compares_go():
    compiled = _compiled(STEPS, Policy())
    graph = compiled.graph
    live = [n for n in graph.nodes if n.kind != "removed"]
    kernels = [n for n in live if n.kernel == "threshold_select"]
    assert all(graph.values[n.operands[0]].arg_index == 0 for n in kernels)  # x is %arg0
    # the compares and converts of the first two steps are gone; the third compare is an
    # output, so it stays (its convert goes)
    assert sum(n.op_name == "stablehlo.compare" for n in live) == 1
    assert sum(n.op_name == "stablehlo.convert" for n in live) == 0
    segments = [s.source for s in compiled.plan.steps if isinstance(s, Segment)]
    assert sum(text.count("stablehlo.compare") for text in segments) == 1


def test_baselines_no_bound_and_other_products_stay_in_spu():
    assert _calls(STEPS, Policy(low=FXP64())) == []  # single-ring FXP64: SPU's own comparison
    assert not any(k == "threshold_select" for k, _ in _calls(STEPS, dataclasses.replace(Policy(), comparison_bound=None)))
    assert not any(k == "threshold_select" for k, _ in _calls(NOT_STEPS, Policy()))


def test_a_scope_bound_is_the_kernels_bound():
    policy = Policy.from_obj({"comparison_bound": 2000, "overrides": [{"scope": "*", "comparison_bound": 48}]})
    assert {p["bound"] for k, p in _calls(STEPS, policy) if k == "threshold_select"} == {48.0}
