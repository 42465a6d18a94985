"""Front end: jax function -> mixed-ring Program -> three-party simulation."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parents[1]

from ditto_spu.frontend import compile  # noqa: E402
from ditto_spu.policy import Policy  # noqa: E402
from ditto_spu.rings import FXP32, FXP64  # noqa: E402
from ditto_spu.simulation import sim_jax  # noqa: E402


def _load_bert_block():
    path = ROOT / "tests" / "passes" / "bert_block.py"
    spec = importlib.util.spec_from_file_location("bert_block", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bert_block = _load_bert_block()


def test_compile_bert_block_segments_and_casts():
    args = bert_block.example_args()
    program = compile(bert_block.block, *args)
    plan = program.plan
    rings = [str(s.ring) for s in plan.segments]
    # the softmax's denominator and LayerNorm's two sums run as local sums, the attention
    # scale and LayerNorm's two divisions by 16 as products with a public constant,
    # LayerNorm's rsqrt as the calibrated kernel: each between two segments
    assert rings == ["FXP32[f=8]", "FXP64[f=18]", "FXP64[f=18]", "FXP32[f=8]"] + ["FXP64[f=18]"] * 6
    assert [(c.kernel, c.params.get("constant")) for c in plan.kernel_calls] == [
        ("multiply", 0.25), ("sum_local", None), ("sum_local", None), ("multiply", 1 / 16), ("sum_local", None),
        ("multiply", 1 / 16), ("rsqrt_calibrated", None),
    ]
    pairs = [(str(k.src_ring), str(k.dst_ring)) for k in plan.kernel_steps]
    assert pairs.count(("FXP32[f=8]", "FXP64[f=18]")) == 2  # scores up, dense output up
    assert pairs.count(("FXP64[f=18]", "FXP32[f=8]")) == 6  # x, 4 weights, probabilities
    assert program.arg_paths == ["[0]", "[1]", "[2]", "[3]", "[4]"]
    assert "encoder/layer/0/attention/softmax" in program.describe()


def test_bert_block_simulates_close_to_plaintext():
    args = bert_block.example_args()
    fn = sim_jax(bert_block.block)
    out = fn(*args)
    ref = np.asarray(bert_block.block(*[a.astype(np.float64) for a in args]), np.float64)
    ref32 = np.asarray(jax.jit(bert_block.block)(*args), np.float64)
    assert out.shape == ref.shape
    # FXP32 with 8 fraction bits on the dense layers, then LayerNorm normalises:
    assert np.max(np.abs(out - ref32)) < 0.15
    stats = fn.last_stats
    assert stats.wall_s > 0 and sum(stats.bytes_sent) > 0
    kinds = stats.by_kind()
    assert kinds["upcast_fxp32_to_fxp64"]["count"] == 2


def test_all_f32_function_is_one_fm64_segment_like_stock_spu():
    def f(x, w):
        return jax.nn.gelu(x @ w), jnp.argmax(x, axis=1)

    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    w = np.eye(4, dtype=np.float32) * 0.5
    fn = sim_jax(f)
    y, idx = fn(x, w)
    plan = fn.last_program.plan
    assert [type(s).__name__ for s in plan.steps] == ["Segment"] and plan.rings == [FXP64()]
    ry, ridx = f(x, w)
    np.testing.assert_allclose(y, ry, atol=2e-3)
    np.testing.assert_array_equal(idx, ridx)


def test_pytree_arguments_and_results():
    def f(params, x):
        h = (x.astype(jnp.float16) @ params["w"].astype(jnp.float16)).astype(jnp.float32)
        return {"out": h + params["b"], "twice": (2 * x,)}

    params = {"w": np.full((4, 2), 0.5, np.float32), "b": np.ones((2,), np.float32)}
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    fn = sim_jax(f)
    out = fn(params, x)
    ref = f(params, x)
    np.testing.assert_allclose(out["out"], ref["out"], atol=0.05)
    np.testing.assert_allclose(out["twice"][0], ref["twice"][0], atol=1e-4)
    assert fn.last_program.arg_paths == ["[0]['b']", "[0]['w']", "[1]"]


def test_scope_override_changes_fraction_bits_end_to_end():
    def f(x):
        with jax.named_scope("layer/0"):
            h = x.astype(jnp.float16) * jnp.float16(0.25)
        with jax.named_scope("layer/1"):
            h = h * h
        return h.astype(jnp.float32)

    x = np.linspace(-2, 2, 8, dtype=np.float32)
    policy = Policy().with_override("layer/1", float16="FXP32[f=12]")
    fn = sim_jax(f, policy)
    out = fn(x)
    plan = fn.last_program.plan
    rings = {v.ring for v in plan.variables.values()}  # layer/0's product is a kernel call, not a segment
    assert FXP32(12) in rings and FXP32(8) in rings
    np.testing.assert_allclose(out, (x * 0.25) ** 2, atol=2 * 2.0**-8)


def test_scalar_output():
    fn = sim_jax(lambda x: jnp.sum(x))
    assert abs(fn(np.ones((2, 3), np.float32)) - 6.0) < 1e-3


# ---- property test: random small programs mixing f16 / bf16 / f32 ---------------------

_DTYPES = {"f16": jnp.float16, "bf16": jnp.bfloat16, "f32": jnp.float32}
_OPS = ["add", "sub", "mul", "neg", "matmul", "scale"]


def _build(steps):
    def f(x, y):
        acc = x
        for dtype, op in steps:
            t = _DTYPES[dtype]
            a, b = acc.astype(t), y.astype(t)
            if op == "add":
                acc = a + b
            elif op == "sub":
                acc = a - b
            elif op == "mul":
                acc = a * b
            elif op == "neg":
                acc = -a
            elif op == "matmul":
                acc = (a @ b.T) * t(0.25)
            else:
                acc = a * t(0.5)
        return acc.astype(jnp.float32)

    return f


def _tolerance(steps, policy, scale):
    # every step in FXP32 can add ~1 ulp of rounding (truncation) per product term;
    # errors grow at most by the magnitude of the other factor (|y| <= 1 here)
    ulp = max(r.ulp for r in (policy.ring_for(d) for d, _ in steps))
    return 4 * (len(steps) + 1) * ulp * scale + 0.02 * scale  # + bf16 rounding of plaintext


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.sampled_from(list(_DTYPES)), st.sampled_from(_OPS)), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_random_mixed_programs_match_plaintext(steps, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(4, 4)).astype(np.float32)
    y = rng.uniform(-1, 1, size=(4, 4)).astype(np.float32)
    f = _build(steps)
    policy = Policy()
    out = sim_jax(f, policy)(x, y)
    ref = np.asarray(jax.jit(f)(x, y), np.float64)
    scale = max(1.0, float(np.max(np.abs(ref))))
    assert np.max(np.abs(out - ref)) <= _tolerance(steps, policy, scale), (steps, out, ref)


# ---- CLI ------------------------------------------------------------------------------


def test_cli_compile_function_and_mlir(capsys, tmp_path):
    import argparse

    from ditto_spu.cli import compile as cli_compile

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_compile.add_parser(sub)
    path = ROOT / "tests" / "passes" / "bert_block.py"
    plan_path = tmp_path / "plan.json"
    args = parser.parse_args(
        ["compile", f"{path}:block", "--shapes", bert_block.SHAPES, "--plan", str(plan_path)]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "== annotated IR ==" in text and "10 segments, 8 casts" in text
    assert "FXP32[f=8] -> FXP64[f=18]" in text and "bits" in text
    assert plan_path.exists()
    args = parser.parse_args(["compile", str(ROOT / "tests/data/hlo/mixed_chain.mlir"), "--json", "--no-spu"])
    assert args.func(args) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    # the FXP32 part, 2.0·x, is the multiply kernel: one FXP64 segment remains
    assert [s["ring"] for s in summary["segments"]] == ["FXP64[f=18]"]
    assert len(summary["casts"]) == 2


def test_uniform_fm64_policy_runs_narrow_floats_in_one_ring():
    """The 'approximations without mixed rings' ablation: f16/bf16 stay in FXP64, so
    f32<->f16 converts happen inside a segment (stock SPU cannot run those as written)."""

    def f(x):
        h = x.astype(jnp.float16) * jnp.float16(1.5)
        b = h.astype(jnp.bfloat16) - jnp.bfloat16(0.25)
        return b.astype(jnp.float32) * x

    x = np.linspace(-1, 1, 6, dtype=np.float32)
    fn = sim_jax(f, Policy.uniform(FXP64()))
    out = fn(x)
    plan = fn.last_program.plan
    assert [type(s).__name__ for s in plan.steps] == ["Segment"]
    np.testing.assert_allclose(out, (x * 1.5 - 0.25) * x, atol=1e-2)  # bf16 rounding


def test_sim_jax_refuses_to_return_what_a_wrapped_ring_computes():
    """300·600 summed twice is 360000: at FXP32[f=8] the product (2f = 16 fraction bits)
    leaves the ring. The run is refused with the scope named; unchecked, it wraps."""
    from ditto_spu.quant import RingOverflowError

    a = np.full((2, 2), 300, np.float16)
    b = np.full((2, 2), 600, np.float16)
    with pytest.raises(RingOverflowError, match="dot_general: product before truncation"):
        sim_jax(lambda x, y: x @ y)(a, b)
    wrapped = np.asarray(sim_jax(lambda x, y: x @ y, check_ranges=False)(a, b))
    assert np.all(np.abs(wrapped - 360000) > 1e5)
