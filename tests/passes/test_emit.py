"""emit: every segment is a standalone @main that stock spu.compile accepts; plans are
consistent and serializable."""

import pytest

from ditto_spu.plan import KernelStep, Plan, Segment
from ditto_spu.policy import Policy
from passes import compile_stablehlo, parse_module

SNIPPETS = ["mixed_chain", "both_rings", "while_loop", "reduce_case", "multi_result", "calls", "scoped_override"]


@pytest.mark.parametrize("name", SNIPPETS)
def test_every_segment_compiles_with_stock_spu(hlo, name):
    policy = Policy().with_override("layer/1", float16="FXP32[f=12]")
    c = compile_stablehlo(hlo(name), policy)
    plan = c.plan.validate()
    assert plan.segments
    for seg in plan.segments:
        assert seg.code and b"pphlo" in seg.code
        g = parse_module(seg.source)  # standalone: parses on its own, one @main
        assert len(g.args) == len(seg.input_names) and len(g.outputs) == len(seg.output_names)
        assert "func.call" not in seg.source
    again = Plan.from_bytes(plan.to_bytes())
    assert [s.name for s in again.steps] == [s.name for s in plan.steps]


def test_plan_names_bindings_and_varinfo(hlo):
    # kernels off: the 2.0·x would be the multiply kernel, and this plan is about segments
    plan = compile_stablehlo(hlo("mixed_chain"), kernels=False).plan
    assert [b.name for b in plan.inputs] == ["in0", "in1"]
    assert [type(s).__name__ for s in plan.steps] == ["KernelStep", "Segment", "KernelStep", "Segment"]
    cast = plan.steps[0]
    assert isinstance(cast, KernelStep) and cast.kernel == "cast" and cast.src == "in0"
    assert plan.variables[cast.dst].dtype == "float16" and plan.variables[cast.dst].shape == (4,)
    seg = plan.steps[1]
    assert isinstance(seg, Segment) and str(seg.ring) == "FXP32[f=8]"
    assert "stablehlo.constant" in seg.source  # the constant was cloned, not shipped
    assert all(n in plan.variables for s in plan.segments for n in s.output_names)
    assert [o.name for o in plan.outputs] == [plan.steps[-1].output_names[0]]


def test_identical_segments_are_compiled_once(hlo):
    import sys

    emit_mod = sys.modules["passes.emit"]

    compile_stablehlo(hlo("calls"))
    n = len(emit_mod._CODE_CACHE)
    compile_stablehlo(hlo("calls"))
    assert len(emit_mod._CODE_CACHE) == n


def test_narrow_floats_become_f32_inside_segments():
    text = """
    func.func public @main(%arg0: tensor<2xbf16>, %arg1: tensor<2xf16>) -> (tensor<2xbf16>, tensor<2xf32>) {
      %cst = stablehlo.constant dense<0xFF80> : tensor<bf16>
      %cst_0 = stablehlo.constant dense<[1.5, -2.0]> : tensor<2xbf16>
      %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<bf16>) -> tensor<2xbf16>
      %1 = stablehlo.maximum %arg0, %0 : tensor<2xbf16>
      %2 = stablehlo.add %1, %cst_0 : tensor<2xbf16>
      %3 = stablehlo.convert %arg1 : (tensor<2xf16>) -> tensor<2xbf16>
      %4 = stablehlo.multiply %2, %3 : tensor<2xbf16>
      %5 = stablehlo.convert %4 : (tensor<2xbf16>) -> tensor<2xf32>
      return %4, %5 : tensor<2xbf16>, tensor<2xf32>
    }"""
    from ditto_spu.rings import FXP64

    c = compile_stablehlo(text, Policy.uniform(FXP64()))
    (seg,) = c.plan.segments
    assert "bf16" not in seg.source and "f16" not in seg.source
    assert "0xFF800000" in seg.source  # -inf, widened exactly
    assert "stablehlo.convert" not in seg.source
    assert c.plan.variables[seg.output_names[0]].dtype == "bfloat16"  # logical dtype kept
