"""Cost categories from jax name scopes, on hand-written scopes and on real compiled models."""

import collections

import pytest

from ditto_spu.bench.categories import CATEGORIES, categorize, step_category


@pytest.mark.parametrize(
    "scope, op, expected",
    [
        ("encoder/layer/0/attention/self/softmax_puma/exp", "stablehlo.exponential", "softmax"),
        ("encoder/layer/3/attention/self/softmax_2quad/div", "stablehlo.divide", "softmax"),
        ("encoder/layer/0/intermediate/gelu_quad/mul", "stablehlo.multiply", "gelu"),
        ("h/1/mlp/gelu_puma/ge", "stablehlo.compare", "gelu"),
        ("encoder/layer/0/output/LayerNorm/rsqrt", "stablehlo.rsqrt", "layernorm"),
        ("h/0/ln_1/reduce_sum", "stablehlo.reduce", "layernorm"),
        ("ln_f/rsqrt", "stablehlo.rsqrt", "layernorm"),
        ("encoder/layer/0/attention/self/query/dot_general", "stablehlo.dot_general", "linear"),
        ("encoder/layer/0/attention/self/query/add", "stablehlo.add", "linear"),
        ("encoder/layer/0/attention/self/...qhd,...khd->...hqk/dot_general", "stablehlo.dot_general", "linear"),
        ("encoder/layer/0/attention/self/mul", "stablehlo.multiply", "linear"),
        ("encoder/layer/0/intermediate/dense/dot_general", "stablehlo.dot_general", "linear"),
        ("h/0/attn/c_attn/dot_general", "stablehlo.dot_general", "linear"),
        ("h/0/mlp/c_proj/add", "stablehlo.add", "linear"),
        ("embeddings/word_embeddings/embed_one_hot/dot_general", "stablehlo.dot_general", "embedding"),
        ("embeddings/LayerNorm/rsqrt", "stablehlo.rsqrt", "embedding"),
        ("wte/embed_one_hot/dot_general", "stablehlo.dot_general", "embedding"),
        ("encoder/layer/0/attention/output/add", "stablehlo.add", "other"),
        ("h/0/add", "stablehlo.add", "other"),
        ("", "stablehlo.dot_general", "linear"),
        ("", "stablehlo.add", "other"),
    ],
)
def test_categorize(scope, op, expected):
    assert categorize(scope, op) == expected


def test_step_category():
    assert step_category("seg3_softmax", "segment") == "softmax"
    assert step_category("seg0_linear", "segment") == "linear"
    assert step_category("seg7", "segment") == "other"
    assert step_category("cast2", "upcast_fxp32_to_fxp64") == "casts"


@pytest.mark.parametrize(
    "name, mode", [("tiny", "puma"), ("tiny", "mpcformer"), ("tiny", "ditto"), ("tiny-gpt2", "ditto")]
)
def test_every_op_of_a_real_body_lands_where_expected(name, mode):
    """On the compiled body of a tiny model: non-linearities in their categories, every
    matmul linear, only glue (adds, reshapes, converts) in other, and segment names carry
    the category."""
    from ditto_spu import frontend
    from ditto_spu.bench.categories import split_by_category
    from ditto_spu.bench.harness import BenchConfig, build_case, load_bench_model, token_ids
    from ditto_spu.models import load_mode

    config = BenchConfig(model=name, seq_len=8)
    model = load_bench_model(config)
    m = load_mode(mode)
    fn, args = build_case(model, m, config, token_ids(model, config))
    program = frontend.compile(fn, *args, split_by=split_by_category, compile_segments=False)
    ops = collections.defaultdict(collections.Counter)
    for node in program.compiled.graph.nodes:
        # "call": an op handed to one of ditto-spu's own kernels (FXP32 matmul)
        if node.kind in ("op", "call") and not node.const:
            ops[categorize(node.location.scope, node.op_name)][node.op_name] += 1
    assert set(ops) == {"linear", "softmax", "gelu", "layernorm", "other"}
    assert "stablehlo.dot_general" not in ops["other"]
    assert not {"stablehlo.exponential", "stablehlo.rsqrt", "stablehlo.divide", "stablehlo.compare"} & set(ops["other"])
    assert "stablehlo.rsqrt" in ops["layernorm"]
    # per layer: BERT q, k, v, out, ffn up, ffn down; GPT-2 c_attn, c_proj, c_fc, c_proj;
    # plus the score and context matmuls; 2 layers
    per_layer = 8 if name == "tiny" else 6
    assert ops["linear"]["stablehlo.dot_general"] == per_layer * 2
    for step in program.plan.steps:
        if step.__class__.__name__ == "Segment":
            assert step_category(step.name, "segment") in CATEGORIES
    # every step gets a category; kernel calls are the matmuls (linear), the softmax's
    # reduced-ring max and cut-off (softmax), LayerNorm's calibrated rsqrt (layernorm) and
    # the local sums (LayerNorm's means, the softmax's denominator), the softmax's exp
    # (softmax) and the elementwise products (where their scope puts them)
    from ditto_spu.bench.categories import step_categories

    cats = step_categories(program)
    assert set(cats) == {s.name for s in program.plan.steps}
    for step in program.plan.steps:
        if step.__class__.__name__ == "KernelCall":
            if step.kernel == "sum_local":
                assert cats[step.name][0] in ("layernorm", "softmax"), cats[step.name]
                continue
            if step.kernel == "multiply":  # LayerNorm's products, GeLU's square and coefficients, the attention scale
                assert cats[step.name][0] in ("layernorm", "gelu", "linear"), cats[step.name]
                continue
            want = {"matmul_fxp32": "linear", "rsqrt_calibrated": "layernorm"}.get(step.kernel, "softmax")
            assert step.kernel in (
                "matmul_fxp32", "max_reduced_ring", "clamp_reduced_ring", "exp_taylor_fxp32", "rsqrt_calibrated",
                "divide_calibrated",
            )
            assert cats[step.name][0] == want, (step.kernel, cats[step.name])
        elif step.__class__.__name__ == "KernelStep":
            assert cats[step.name][0] == "casts"
