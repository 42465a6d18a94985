"""Pass-level tests: StableHLO snippets in, rings / casts / segments out (no SPU run)."""

import pytest

from ditto_spu.policy import Policy
from ditto_spu.rings import FXP32, FXP64
from passes import (
    CastPart,
    CompileError,
    SegmentPart,
    annotate_rings,
    casts,
    compile_stablehlo,
    format_graph,
    insert_casts,
    parse_module,
    partition,
)

LOW, HIGH = FXP32(8), FXP64(18)


def run_passes(text, policy=None):
    g = parse_module(text)
    annotate_rings(g, policy)
    insert_casts(g)
    return g, partition(g)


def seg_rings(parts):
    return [p.ring for p in parts if isinstance(p, SegmentPart)]


def ops_of(g, part):
    return [g.nodes[n].op_name.replace("stablehlo.", "") for n in part.nodes]


def test_parse_keeps_scopes_and_results(hlo):
    g = parse_module(hlo("mixed_chain"))
    assert [g.values[a].elem for a in g.args] == ["f32", "f32"]
    scopes = [n.location.scope for n in g.nodes]
    assert "dense/mul" in scopes and "norm/add" in scopes  # jit(...)/ prefixes dropped
    assert len(g.outputs) == 1


def test_annotate_rings_by_element_type(hlo):
    g = annotate_rings(parse_module(hlo("mixed_chain")))
    by_op = {n.op_name: n for n in g.nodes}
    assert by_op["stablehlo.multiply"].ring == LOW
    assert by_op["stablehlo.add"].ring == HIGH
    assert by_op["stablehlo.constant"].const and by_op["stablehlo.constant"].ring is None
    assert all(g.values[a].ring == HIGH for a in g.args)


def test_converts_become_casts_and_segments_alternate(hlo):
    g, parts = run_passes(hlo("mixed_chain"))
    kinds = [type(p).__name__ for p in parts]
    assert kinds == ["CastPart", "SegmentPart", "CastPart", "SegmentPart"]
    assert [(p.src_ring, p.dst_ring) for p in parts if isinstance(p, CastPart)] == [
        (HIGH, LOW),
        (LOW, HIGH),
    ]
    assert seg_rings(parts) == [LOW, HIGH]
    low_seg = parts[1]
    assert ops_of(g, low_seg) == ["multiply"] and len(low_seg.consts) == 1  # constant cloned
    assert [g.values[v].elem for v in low_seg.inputs] == ["f16"]


def test_value_used_by_both_rings_is_cast_once(hlo):
    g, parts = run_passes(hlo("both_rings"))
    cs = [p for p in parts if isinstance(p, CastPart)]
    assert len(cs) == 1 and (cs[0].src_ring, cs[0].dst_ring) == (LOW, HIGH)
    assert seg_rings(parts) == [LOW, HIGH]
    first = parts[0]
    # the f16 value is both used inside FXP32 and live out (to the cast)
    assert cs[0].src in first.outputs
    high = parts[2]
    assert ops_of(g, high) == ["exponential", "add"]
    assert high.inputs == [cs[0].dst]  # both converts read the one cast result


def test_edge_without_convert_gets_cast_and_mixed_converts_keep_value_type():
    text = """
    func.func public @main(%arg0: tensor<3xf16>) -> (tensor<3xf32>, tensor<3xf16>) {
      %0 = stablehlo.negate %arg0 : tensor<3xf16>
      %1 = stablehlo.convert %0 : (tensor<3xf16>) -> tensor<3xf32>
      %2 = stablehlo.convert %0 : (tensor<3xf16>) -> tensor<3xbf16>
      %3 = stablehlo.add %2, %2 : tensor<3xbf16>
      %4 = stablehlo.convert %3 : (tensor<3xbf16>) -> tensor<3xf16>
      return %1, %4 : tensor<3xf32>, tensor<3xf16>
    }"""
    policy = Policy(bfloat16=HIGH)  # f32 and bf16 share FXP64: two converts, two types
    g, parts = run_passes(text, policy)
    cs = [p for p in parts if isinstance(p, CastPart)]
    # f16 -> FXP64 once, keeping f16; both converts then run inside FXP64;
    # the bf16 add result crosses back to FXP32 through its convert
    assert [(c.src_ring, c.dst_ring) for c in cs] == [(LOW, HIGH), (HIGH, LOW)]
    assert g.values[cs[0].dst].elem == "f16"
    assert seg_rings(parts) == [LOW, HIGH]
    high = [p for p in parts if isinstance(p, SegmentPart)][1]
    assert ops_of(g, high) == ["convert", "convert", "add"]
    assert high.inputs == [cs[0].dst]


def test_while_loop_stays_whole_with_its_counter(hlo):
    g, parts = run_passes(hlo("while_loop"))
    assert seg_rings(parts) == [LOW, HIGH]
    high = [p for p in parts if isinstance(p, SegmentPart)][1]
    assert ops_of(g, high) == ["while"]
    loop = g.nodes[high.nodes[0]]
    assert [g.values[r].ring for r in loop.results] == [HIGH, HIGH]  # i32 counter too
    assert len(high.consts) == 1  # the initial counter constant


def test_reduce_region_and_case_captures(hlo):
    g, parts = run_passes(hlo("reduce_case"))
    segs = [p for p in parts if isinstance(p, SegmentPart)]
    assert not [p for p in parts if isinstance(p, CastPart)]
    by_ring = {s.ring: s for s in segs}
    assert ops_of(g, by_ring[LOW]) == ["reduce"]
    assert ops_of(g, by_ring[HIGH]) == ["exponential", "case"]
    case = next(g.nodes[n] for n in by_ring[HIGH].nodes if g.nodes[n].op_name == "stablehlo.case")
    assert len(case.captures) == 1  # the exponential's result, used inside both branches
    assert g.values[g.args[1]].ring == HIGH  # the i32 branch index follows its user


def test_multiple_results_returned_args_and_constants(hlo):
    g, parts = run_passes(hlo("multi_result"))
    segs = [p for p in parts if isinstance(p, SegmentPart)]
    assert len(segs) == 1 and segs[0].ring == HIGH
    reduce = next(g.nodes[n] for n in segs[0].nodes if g.nodes[n].op_name == "stablehlo.reduce")
    assert [g.values[r].elem for r in reduce.results] == ["f32", "i32"]
    assert "constant" in ops_of(g, segs[0])  # a returned constant is computed by a segment
    c = compile_stablehlo(hlo("multi_result"), compile=False)
    plan = c.plan
    assert c.emitted.output_names[1] == c.emitted.output_names[4]  # repeated result
    assert c.emitted.output_names[2] == "in1"  # returned argument, no step needed
    assert len(plan.outputs) == 4
    assert plan.variables["in1"].ring == LOW and plan.variables["in1"].dtype == "float16"


def test_calls_are_inlined(hlo):
    g, parts = run_passes(hlo("calls"))
    assert all(n.op_name != "func.call" for n in g.nodes)
    assert [n.op_name for n in g.nodes if not n.is_cast] == [
        "stablehlo.add",
        "stablehlo.multiply",
    ]
    assert seg_rings(parts) == [HIGH, LOW]


def test_scope_override_inserts_rescale_cast(hlo):
    policy = Policy().with_override("layer/1", float16="FXP32[f=12]")
    g, parts = run_passes(hlo("scoped_override"), policy)
    cs = [p for p in parts if isinstance(p, CastPart)]
    assert [(c.src_ring, c.dst_ring) for c in cs] == [(FXP32(8), FXP32(12))]
    assert g.nodes[cs[0].node].note == "edge"
    assert seg_rings(parts) == [FXP32(8), FXP32(12)]


def test_all_f32_is_one_fm64_segment():
    text = """
    func.func public @main(%arg0: tensor<2x2xf32>, %arg1: tensor<2xi32>) -> (tensor<2x2xf32>, tensor<2xi32>) {
      %0 = stablehlo.dot_general %arg0, %arg0, contracting_dims = [1] x [0] : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
      %1 = stablehlo.exponential %0 : tensor<2x2xf32>
      %2 = stablehlo.add %arg1, %arg1 : tensor<2xi32>
      return %1, %2 : tensor<2x2xf32>, tensor<2xi32>
    }"""
    c = compile_stablehlo(text, compile=False)
    assert [type(s).__name__ for s in c.plan.steps] == ["Segment"]
    assert c.plan.rings == [HIGH]


def test_unsupported_call_names_op_and_location(hlo):
    with pytest.raises(CompileError, match=r"func.call to @external at encoder/layer/0/mystery at model.py:12:7"):
        parse_module(hlo("unsupported_call"))


def test_unsupported_type_names_op_and_location(hlo):
    with pytest.raises(CompileError, match=r"stablehlo.complex at fft/complex at model.py:30:4.*complex<f32>"):
        parse_module(hlo("unsupported_complex"))


def test_bool_crossing_rings_is_an_error():
    text = """
    func.func public @main(%arg0: tensor<3xf16>, %arg1: tensor<3xf32>) -> tensor<3xf32> {
      %0 = stablehlo.compare GT, %arg0, %arg0, FLOAT : (tensor<3xf16>, tensor<3xf16>) -> tensor<3xi1>
      %1 = stablehlo.select %0, %arg1, %arg1 : tensor<3xi1>, tensor<3xf32>
      return %1 : tensor<3xf32>
    }"""
    with pytest.raises(CompileError, match="boolean values cannot change rings"):
        run_passes(text)


def test_integer_crossing_is_a_cast():
    text = """
    func.func public @main(%arg0: tensor<3xf16>) -> tensor<3xf32> {
      %0 = stablehlo.convert %arg0 : (tensor<3xf16>) -> tensor<3xi32>
      %1 = stablehlo.convert %0 : (tensor<3xi32>) -> tensor<3xf32>
      return %1 : tensor<3xf32>
    }"""
    g, parts = run_passes(text)
    cs = [p for p in parts if isinstance(p, CastPart)]
    assert len(cs) == 1 and g.values[cs[0].dst].elem == "i32"
    assert (cs[0].src_ring, cs[0].dst_ring) == (LOW, HIGH)


def test_annotated_ir_shows_rings_and_casts(hlo):
    g, _ = run_passes(hlo("mixed_chain"))
    text = format_graph(g)
    assert "FXP32[f=8] = multiply" in text
    assert "cast %a0 FXP64[f=18] -> FXP32[f=8]" in text
    assert "const = constant" in text
    assert len(casts(g)) == 2


def test_parse_error_is_compile_error():
    with pytest.raises(CompileError, match="cannot parse"):
        parse_module("func.func @main(")
