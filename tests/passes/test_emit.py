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
    plan = compile_stablehlo(hlo("mixed_chain")).plan
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
