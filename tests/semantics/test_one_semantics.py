"""One fixed-point semantics: the compiler, the emulator, the training model and the secure
run agree, op by op and value by value, on models and on control flow.

For each function below:

* rings: the ring the compiler (passes.annotate_rings) gives every op equals the ring the
  interpreter evaluates it in, and the same matmuls go to the FXP32 kernel;
* emulator (float64, checked) vs training model (float32, jit): the same interpreter in
  two precisions. float32 holds FXP32 values exactly but rounds FXP64 products (24-bit
  mantissa), which can move a truncation by one ulp; that propagates. Bound: relative L2
  ≤ 2e-3 and max error ≤ 1e-2 of the output's scale (measured: ≤ 1e-4 relative here);
* emulator vs secure run: SPU's truncation is randomised, so two secure runs of the same
  input differ; that difference is the noise floor. The emulator (the truncation's mean)
  must be within 2× the floor in relative L2, and within 2× the floor + 4 in max error
  counted in ulps of the output's ring (cosine alone would miss a 2^k scale error).

A deliberately wrong rule in one place (an op moved to the other ring, on the compiler's
side or on the interpreter's) makes these checks fail.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditto_spu import frontend, simulation
from ditto_spu.distill.fakequant import fake_quant
from ditto_spu.metrics import relative_l2 as rel_l2
from ditto_spu.models import load_mode, load_model, one_hot_ids, prepare_params, secure_forward
from ditto_spu.policy import Policy
from ditto_spu.quant import emulate
from ditto_spu.rings import RingSpec
from ditto_spu.semantics import consistency, interpreter
from ditto_spu.semantics.consistency import compiler_view, interpreter_view, ring_mismatches

SEQ = 16


# ---- the functions ----------------------------------------------------------------------------


def _fori(x, w, g):
    h = x @ w
    h = jax.lax.fori_loop(0, 3, lambda i, c: c * jnp.float16(0.5) + h, h)
    y = h.astype(jnp.float32)
    return y * g + jnp.exp(y - y.max(-1, keepdims=True))


def _while(x, w, g):
    h = (x @ w).astype(jnp.float32)
    _, z = jax.lax.while_loop(
        lambda s: s[0] < 4, lambda s: (s[0] + 1, (s[1] * g).astype(jnp.float16).astype(jnp.float32) + 0.125), (0, h)
    )
    return z


def _cond(x, w, g):
    h = x @ w
    y = h.astype(jnp.float32)
    z = jax.lax.cond(
        y.sum() > 0,
        lambda a: jnp.exp(a - a.max(-1, keepdims=True)),
        lambda a: (a * a * 0.5 + 1.0).astype(jnp.float16).astype(jnp.float32),
        y,
    )
    return z / z.sum(-1, keepdims=True) + h.astype(jnp.float32)


def _scan(x, w, g):
    h = x @ w

    def step(c, row):
        c = c * jnp.float16(0.5) + row
        return c, c.astype(jnp.float32) * g

    c, ys = jax.lax.scan(step, h[0], h)
    return ys, c


_RNG = np.random.RandomState(0)
_LOOP_ARGS = (
    (0.5 * _RNG.randn(8, 16)).astype(np.float16),
    (0.3 * _RNG.randn(16, 16)).astype(np.float16),
    (0.5 + _RNG.rand(16)).astype(np.float32),
)
_LOOP_POLICY = Policy().with_override("while", float16="FXP32[f=10]")


def _bert(mode_name="ditto"):
    model = load_model("tiny", num_hidden_layers=1, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    mode = load_mode(mode_name)
    fwd = secure_forward(model, mode, output="last_hidden_state")

    def bert(params, x, mask):
        return fwd(prepare_params(params, mode), x, mask)

    rs = np.random.RandomState(1)
    ids = rs.randint(0, model.config.vocab_size, (1, SEQ))
    mask = np.ones((1, SEQ), np.int32)
    mask[0, -3:] = 0
    # Random weights (σ 0.02) make small activations: enough fraction bits keep the noise
    # floor of SPU's truncation far below the effect of a wrong rule.
    policy = Policy(low=RingSpec.parse("FXP32[f=13]")).with_override("layer/0", float16="FXP32[f=12]")
    return bert, (model.params, one_hot_ids(ids, model.config.vocab_size, np.float16), mask), policy


def _gpt2(mode_name="ditto"):
    model = load_model("tiny-gpt2", n_layer=1, n_embd=256, n_head=4, vocab_size=1000, n_positions=128)
    mode = load_mode(mode_name)
    fwd = secure_forward(model, mode)

    def gpt2(params, x, mask):
        return fwd(prepare_params(params, mode), x, mask)

    rs = np.random.RandomState(2)
    ids = rs.randint(0, 1000, (1, SEQ))
    mask = np.ones((1, SEQ), np.int32)
    return gpt2, (model.params, one_hot_ids(ids, 1000, np.float16), mask), Policy(low=RingSpec.parse("FXP32[f=12]"))


CASES = {
    "minilm_shaped_bert_1_layer": _bert,
    # ditto-puma: PUMA's GeLU in FXP64, its three steps as threshold_select kernels
    "minilm_shaped_bert_1_layer_ditto_puma": lambda: _bert("ditto-puma"),
    # ditto-steps: a quadratic between two steps, all in FXP32, the steps as threshold_select
    "minilm_shaped_bert_1_layer_ditto_steps": lambda: _bert("ditto-steps"),
    "gpt2_1_layer": _gpt2,
    "gpt2_1_layer_ditto_steps": lambda: _gpt2("ditto-steps"),  # GPT-2's gelu_new, the same two steps
    "fori_loop": lambda: (_fori, _LOOP_ARGS, _LOOP_POLICY),
    "while": lambda: (_while, _LOOP_ARGS, None),
    "cond": lambda: (_cond, _LOOP_ARGS, None),
    "scan": lambda: (_scan, _LOOP_ARGS, _LOOP_POLICY),
}


@functools.lru_cache(maxsize=None)
def case(name):
    return CASES[name]()


@functools.lru_cache(maxsize=None)
def secure_runs(name):
    """Two secure runs of the same input (SPU's truncation randomness differs)."""
    fn, args, policy = case(name)
    run = simulation.sim_jax(fn, policy)
    return [_leaves(run(*args)) for _ in range(2)]


@functools.lru_cache(maxsize=None)
def emulated(name):
    fn, args, policy = case(name)
    return _leaves(emulate(fn, policy).evaluate(*args))


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


# ---- rings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_interpreter_gives_every_op_the_compilers_ring_and_kernel(name):
    fn, args, policy = case(name)
    c_rings, c_kernels = compiler_view(fn, *args, policy=policy)
    i_rings, i_kernels = interpreter_view(fn, *args, policy=policy)
    assert len(c_rings) >= 3
    assert ring_mismatches(c_rings, i_rings) == []
    assert sorted(c_kernels) == sorted(i_kernels)
    assert len({r.field for _, r in c_rings}) == 2  # mixed rings in every case


def test_a_loop_computes_in_one_ring_as_the_compiler_places_it():
    # The fori_loop's body is f16 (FXP32[f=10] by the "while" override) and the scan carries
    # f16 and emits f32: the scan's while op is in FXP64, all of its body too.
    rings = dict(interpreter_view(_scan, *_LOOP_ARGS, policy=_LOOP_POLICY)[0])
    assert str(rings["while"]) == "FXP64[f=18]"
    rings = dict(interpreter_view(_fori, *_LOOP_ARGS, policy=_LOOP_POLICY)[0])
    assert str(rings["while"]) == "FXP32[f=10]"


# ---- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_training_model_matches_emulator_within_float32_rounding(name):
    fn, args, policy = case(name)
    ref = emulated(name)
    fast = _leaves(jax.jit(fake_quant(fn, policy))(*args))
    for r, f in zip(ref, fast):
        scale = np.abs(r).max()
        assert rel_l2(f, r) <= 2e-3, (name, rel_l2(f, r))
        assert np.abs(f - r).max() <= 1e-2 * scale, (name, np.abs(f - r).max(), scale)


def _max_ulps(a, b, ring: RingSpec) -> float:
    return float(np.abs(a - b).max() * 2.0**ring.frac_bits)


@pytest.mark.parametrize("name", list(CASES))
def test_emulator_matches_secure_run_to_the_noise_floor(name):
    s1, s2 = secure_runs(name)
    emu = emulated(name)
    fn, args, policy = case(name)
    rings = _plan_output_rings(fn, args, policy)
    for e, a, b, ring in zip(emu, s1, s2, rings):
        floor = rel_l2(b, a)
        err = rel_l2(e, a)
        assert err <= 2 * floor + 1e-12, (name, err, floor)
        assert _max_ulps(e, a, ring) <= 2 * _max_ulps(b, a, ring) + 4, (
            name, _max_ulps(e, a, ring), _max_ulps(b, a, ring)
        )


def _plan_output_rings(fn, args, policy):
    program = frontend.compile(fn, *args, policy=policy, compile_segments=False)
    rings = {o.name: o.info.ring for o in program.plan.outputs}
    return [rings[n] for n in program.output_names]


# ---- a wrong rule is caught -------------------------------------------------------------------------


def _exp_in_low_ring(real_op_ring):
    """A broken rule: every exp runs in the policy's FXP32 ring."""

    def broken(policy, scope, defined, operands=()):
        if scope.endswith("/exp") or scope == "exp":
            return policy.low
        return real_op_ring(policy, scope, defined, operands)

    return broken


def test_an_op_moved_to_the_other_ring_by_the_compiler_is_caught(monkeypatch):
    annotate = importlib.import_module("passes.annotate_rings")  # the package re-exports a function of that name

    fn, args, policy = case("fori_loop")
    monkeypatch.setattr(annotate, "op_ring", _exp_in_low_ring(annotate.op_ring))
    c_rings, _ = compiler_view(fn, *args, policy=policy)
    monkeypatch.undo()
    i_rings, _ = interpreter_view(fn, *args, policy=policy)
    assert [m[0] for m in ring_mismatches(c_rings, i_rings)] == ["exp"]


# In the BERT layer, exp at FXP32[f=13] instead of FXP64[f=18] stays within the noise floor
# of the layer's output (measured: 0.0048 vs 0.0059): only the ring comparison catches it,
# which is why the rings are compared op by op and not judged by values alone.
@pytest.mark.parametrize("name,values_show_it", [("fori_loop", True), ("minilm_shaped_bert_1_layer", False)])
def test_an_op_moved_to_the_other_ring_by_the_interpreter_is_caught(monkeypatch, name, values_show_it):
    fn, args, policy = case(name)
    s1, s2 = secure_runs(name)
    monkeypatch.setattr(interpreter, "op_ring", _exp_in_low_ring(interpreter.op_ring))
    i_rings, _ = interpreter_view(fn, *args, policy=policy)
    wrong = _leaves(emulate(fn, policy).evaluate(*args))
    monkeypatch.undo()
    c_rings, _ = compiler_view(fn, *args, policy=policy)
    assert [m[0].rsplit("/", 1)[-1] for m in ring_mismatches(c_rings, i_rings)] == ["exp"]
    if values_show_it:  # ... and the values leave the noise floor
        assert rel_l2(wrong[0], s1[0]) > 2 * rel_l2(s2[0], s1[0])


def test_consistency_module_names_the_scope_of_a_mismatch():
    a = [("x/exp", RingSpec.parse("FXP64[f=18]")), ("x/add", RingSpec.parse("FXP32[f=8]"))]
    b = [("x/exp", RingSpec.parse("FXP32[f=8]")), ("x/add", RingSpec.parse("FXP32[f=8]"))]
    assert consistency.ring_mismatches(a, b) == [("x/exp", ["FXP64[f=18]"], ["FXP32[f=8]"])]


def test_softmax_maxima_and_layernorm_rsqrt_run_as_kernels_in_both_views():
    """The ditto softmax's row max and cut-off go to the reduced-ring kernels, its exp and
    division to theirs, and LayerNorm's rsqrt to the calibrated one, under the default bound and range, and the
    sums to the local sum; the interpreter knows it (same scopes). Without the bound and
    the range only the matmuls, the sums and the products are kernels."""
    fn, args, policy = case("minilm_shaped_bert_1_layer")
    _, c_kernels = compiler_view(fn, *args, policy=policy)
    names = {k for _, k in c_kernels}
    assert {
        "max_reduced_ring", "clamp_reduced_ring", "rsqrt_calibrated", "matmul_fxp32", "sum_local", "multiply",
        "exp_taylor_fxp32", "divide_calibrated",
    } <= names
    _, i_kernels = interpreter_view(fn, *args, policy=policy)
    assert sorted(c_kernels) == sorted(i_kernels)
    no_bound = dataclasses.replace(policy, comparison_bound=None, rsqrt_range=None)
    _, c_off = compiler_view(fn, *args, policy=no_bound)
    _, i_off = interpreter_view(fn, *args, policy=no_bound)
    assert {k for _, k in c_off} == {k for _, k in i_off} == {"matmul_fxp32", "sum_local", "multiply"}


def test_puma_gelu_steps_run_as_threshold_selects_in_both_views():
    """ditto-puma's GeLU: its three steps (x ≥ −4, x ≥ −1.95, x > 3, each times its
    piece) go to threshold_select in the compiler and in the interpreter, at the same
    scopes; nothing else does; the FXP64-only baseline keeps SPU's comparisons."""
    fn, args, policy = case("minilm_shaped_bert_1_layer_ditto_puma")
    _, c_kernels = compiler_view(fn, *args, policy=policy)
    _, i_kernels = interpreter_view(fn, *args, policy=policy)
    steps = [scope for scope, k in c_kernels if k == "threshold_select"]
    assert len(steps) == 3 and all("/gelu_puma/" in scope for scope in steps)
    assert sorted(c_kernels) == sorted(i_kernels)
    uniform = Policy.uniform(RingSpec.parse("FXP64[f=18]"))
    assert compiler_view(fn, *args, policy=uniform)[1] == interpreter_view(fn, *args, policy=uniform)[1] == []


@pytest.mark.parametrize("name", ["minilm_shaped_bert_1_layer_ditto_steps", "gpt2_1_layer_ditto_steps"])
def test_stepped_quad_gelu_runs_its_two_steps_as_fxp32_threshold_selects_in_both_views(name):
    """ditto-steps' GeLU: x ≥ −1.72 and x ≥ 1.72, each times its piece, go to
    threshold_select in the compiler and in the interpreter, at the same scopes, in the
    layer's FXP32 ring (ditto-puma's run in FXP64)."""
    fn, args, policy = case(name)
    c_rings, c_kernels = compiler_view(fn, *args, policy=policy)
    _, i_kernels = interpreter_view(fn, *args, policy=policy)
    steps = [scope for scope, k in c_kernels if k == "threshold_select"]
    assert len(steps) == 2 and all("/gelu_quad-steps/" in scope for scope in steps), c_kernels
    assert sorted(c_kernels) == sorted(i_kernels)
    ring_of = dict(c_rings)
    # the BERT case's layer-0 override and the GPT-2 case's base ring are both FXP32[f=12]
    assert {str(ring_of[scope]) for scope in steps} == {"FXP32[f=12]"}


def test_a_gelu_input_beyond_the_comparison_bound_is_named_by_the_emulator():
    """The steps' bound is checked on |x − c|: a bound below this layer's GeLU inputs'
    distance to −4 is an error naming the GeLU's product scope."""
    from ditto_spu.quant.emulator import EmulatorOptions, RingOverflowError

    fn, args, policy = case("minilm_shaped_bert_1_layer_ditto_puma")
    policy = Policy.from_obj({**policy.to_obj(), "overrides": [o.to_obj() for o in policy.overrides] + [
        {"scope": "*/gelu_puma/*", "comparison_bound": 2.0}
    ]})
    with pytest.raises(RingOverflowError, match=r"gelu_puma/mul.*comparison bound 2"):
        emulate(fn, policy, options=EmulatorOptions(mode="raise")).evaluate(*args)


def test_a_score_beyond_the_comparison_bound_is_named_by_the_emulator():
    """A bound the kernel relies on is checked like a ring limit: a too-small bound for
    this layer's masked scores (≈ −1024) is an error naming the max's scope."""
    from ditto_spu.quant.emulator import EmulatorOptions, RingOverflowError

    fn, args, policy = case("minilm_shaped_bert_1_layer")
    tight = dataclasses.replace(policy, comparison_bound=100.0)
    with pytest.raises(RingOverflowError, match=r"softmax_puma/(reduce_max|max).*comparison bound 100"):
        emulate(fn, tight, options=EmulatorOptions(mode="raise")).evaluate(*args)
    emulate(fn, policy, options=EmulatorOptions(mode="raise")).evaluate(*args)  # the default holds


def test_a_variance_outside_the_rsqrt_range_is_named_by_the_emulator():
    from ditto_spu.quant.emulator import EmulatorOptions, RingOverflowError

    fn, args, policy = case("minilm_shaped_bert_1_layer")
    narrow = dataclasses.replace(policy, rsqrt_range=(1e3, 2e3))
    with pytest.raises(RingOverflowError, match=r"rsqrt.*range 1000..2000"):
        emulate(fn, narrow, options=EmulatorOptions(mode="raise")).evaluate(*args)


def test_single_ring_baselines_keep_spus_nonlinear_algorithms():
    """puma's program is FXP64 only: no reduced-ring or calibrated kernel in either view."""
    fn, args, _ = case("minilm_shaped_bert_1_layer")
    uniform = Policy.uniform(RingSpec.parse("FXP64[f=18]"))
    _, c_kernels = compiler_view(fn, *args, policy=uniform)
    _, i_kernels = interpreter_view(fn, *args, policy=uniform)
    assert c_kernels == [] and i_kernels == []
