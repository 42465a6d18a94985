"""Modes on a 2-layer tiny BERT: exactness, precision placement in the IR, param trees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from model_hlo import by_op, hlo_ops

from ditto_spu import approx
from ditto_spu.models import (
    example_inputs,
    load_mode,
    load_model,
    one_hot_ids,
    prepare_params,
    secure_forward,
)

SEQ = 16
MODES = ("exact", "puma", "mpcformer", "ditto")


@pytest.fixture(scope="module")
def bert():
    return load_model("tiny")


def stock(model, ids, mask, **kw):
    """The stock HF model, jitted (its eager __call__ is slow)."""
    return jax.jit(lambda p, i, m: model(i, m, params=p, **kw))(model.params, ids, mask)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 512, (2, SEQ)).astype(np.int32)
    mask = np.ones((2, SEQ), np.int32)
    mask[1, 11:] = 0
    return ids, mask


def run(model, mode, ids, mask, **kw):
    mode = load_mode(mode)
    fwd = jax.jit(secure_forward(model, mode, **kw))
    x = one_hot_ids(ids, model.config.vocab_size, mode.dtypes.low_dtype)
    return fwd(prepare_params(model.params, mode), x, mask)


@pytest.fixture(scope="module")
def ditto_hlo(bert):
    mode = load_mode("ditto")
    fwd = secure_forward(bert, mode, output="last_hidden_state")
    x, mask = example_inputs(bert, mode, SEQ)
    return jax.jit(fwd).lower(prepare_params(bert.params, mode), x, mask).as_text()


def test_exact_mode_reproduces_the_stock_model(bert, batch):
    ids, mask = batch
    ref = stock(bert, ids, mask)
    out = run(bert, "exact", ids, mask, output="last_hidden_state")
    np.testing.assert_allclose(out, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    pooled = run(bert, "exact", ids, mask, output="pooler_output")
    np.testing.assert_allclose(pooled, ref.pooler_output, rtol=1e-5, atol=1e-5)


def test_exact_mode_with_token_types_and_int_ids(bert, batch):
    ids, mask = batch
    types = np.zeros_like(ids)
    types[:, 8:] = 1
    ref = stock(bert, ids, mask, token_type_ids=types).last_hidden_state
    fwd = jax.jit(secure_forward(bert, "exact", output="last_hidden_state", one_hot=False))
    np.testing.assert_allclose(fwd(bert.params, ids, mask, types), ref, rtol=1e-5, atol=1e-5)


def test_exact_mode_on_a_task_head():
    clf = load_model("tiny", task="sequence-classification", num_labels=3)
    ids = np.arange(1, 13, dtype=np.int32)[None]
    np.testing.assert_allclose(
        run(clf, "exact", ids, np.ones_like(ids)), stock(clf, ids, np.ones_like(ids)).logits, rtol=1e-5, atol=1e-5
    )
    assert run(clf, "ditto", ids, np.ones_like(ids)).shape == (1, 3)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_and_is_finite(bert, batch, mode):
    ids, mask = batch
    out = run(bert, mode, ids, mask, output="last_hidden_state")
    assert out.shape == (2, SEQ, 64)
    assert out.dtype == jnp.float32  # LayerNorm output: high precision in every mode
    assert np.isfinite(np.asarray(out)).all()


def test_low_precision_changes_ditto_output_only_slightly(bert, batch):
    ids, mask = batch
    mixed = np.asarray(run(bert, "ditto", ids, mask, output="last_hidden_state"))
    high = np.asarray(run(bert, "ditto@float32", ids, mask, output="last_hidden_state"))
    cos = (mixed * high).sum(-1) / np.linalg.norm(mixed, axis=-1) / np.linalg.norm(high, axis=-1)
    assert cos[0].min() > 0.999 and cos[1, :11].min() > 0.999


def test_ditto_ir_puts_linear_layers_in_f16(ditto_hlo):
    dots = by_op(ditto_hlo, "dot_general")
    # 3 embeddings + 2 layers × (Q, K, V, scores, context, attention out, FFN up, FFN down)
    assert len(dots) == 3 + 2 * 8
    assert {e for e, _ in dots} == {"f16"}
    shapes = [s for _, s in dots]
    assert shapes.count((1, SEQ, 64)) == 3 + 2 * 5  # embeddings, Q/K/V/attn-out/FFN-down
    assert shapes.count((1, 4, SEQ, SEQ)) == 2 * 2  # scores and context per layer
    assert shapes.count((1, SEQ, 128)) == 2  # FFN up
    assert not by_op(ditto_hlo, "gather")  # embeddings are one-hot matmuls


def test_ditto_ir_keeps_nonlinear_parts_in_f32(ditto_hlo):
    ops = hlo_ops(ditto_hlo)
    elems = lambda name: {e for op, e, _ in ops if op == name}  # noqa: E731
    assert elems("exponential") == {"f32"}  # softmax exp
    assert elems("rsqrt") == {"f32"}  # LayerNorm (embeddings + 2 per layer)
    assert len(by_op(ditto_hlo, "rsqrt")) == 5
    # softmax division in f32, on the [b, h, q, k] weights
    assert ("f32", (1, 4, SEQ, SEQ)) in by_op(ditto_hlo, "divide")
    assert ("f16", (1, 4, SEQ, SEQ)) not in by_op(ditto_hlo, "divide")
    # x - max(x) in f16, then the up-cast to f32 before exp
    assert ("f16", (1, 4, SEQ, SEQ)) in by_op(ditto_hlo, "subtract")
    assert ("f32", (1, 4, SEQ, SEQ)) in by_op(ditto_hlo, "convert")
    # quad GeLU in f16 (the policy's GeLU dtype): the square of the FFN activation
    assert ("f16", (1, SEQ, 128)) in by_op(ditto_hlo, "multiply")
    # residual adds in f32: 2 per layer on [b, s, hidden]
    assert by_op(ditto_hlo, "add").count(("f32", (1, SEQ, 64))) >= 2 * 2


def test_ir_has_the_ring_safe_mask_and_no_finfo_min(ditto_hlo):
    assert "dense<1024> : tensor<i32>" in ditto_hlo  # the bias is built in integers
    for finfo_min in ("-3.40282347E+38", "0xFF7FFFFF", "-6.550400e+04", "0xFBFF"):
        assert finfo_min not in ditto_hlo


def test_fm64_modes_have_no_low_precision_at_all(bert):
    mode = load_mode("puma")
    x, mask = example_inputs(bert, mode, SEQ)
    text = jax.jit(secure_forward(bert, mode)).lower(prepare_params(bert.params, mode), x, mask).as_text()
    assert {e for e, _ in by_op(text, "dot_general")} == {"f32"}
    assert "f16" not in text and "bf16" not in text


def test_params_keep_the_hf_tree(bert):
    before = jax.tree_util.tree_map(np.array, bert.params)
    for name in MODES:
        p = prepare_params(bert.params, name)
        assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(bert.params)
        for (path, a), (_, b) in zip(
            traverse_util.flatten_dict(p).items(), traverse_util.flatten_dict(bert.params).items()
        ):
            assert a.shape == b.shape
            want = jnp.float32 if ("LayerNorm" in path or not load_mode(name).dtypes.mixed) else jnp.float16
            assert a.dtype == want, path
    # nothing was modified in place, and the stock model still runs unchanged
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, bert.params)


def test_no_interception_leaks_out(bert, batch):
    ids, mask = batch
    fwd = jax.jit(lambda p, i, m: bert(i, m, params=p).last_hidden_state)
    ref = fwd(bert.params, ids, mask)
    run(bert, "ditto", ids, mask)
    np.testing.assert_array_equal(fwd(bert.params, ids, mask), ref)


def test_bad_inputs_are_reported(bert, batch):
    ids, mask = batch
    fwd = secure_forward(bert, "ditto")
    with pytest.raises(ValueError, match="one-hot"):
        fwd(bert.params, ids, mask)
    with pytest.raises(TypeError, match="not supported"):
        secure_forward(object(), "ditto")
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        one_hot_ids(ids + 600, 512)


def test_masked_positions_do_not_matter(bert, batch):
    """Changing padded tokens changes nothing at unpadded positions (mask really applied)."""
    ids, mask = batch
    ids2 = np.concatenate([ids, ids[1:]])
    ids2[2, 11:] = 7
    mask2 = np.concatenate([mask, mask[1:]])
    for name in ("mpcformer", "ditto"):
        out = np.asarray(run(bert, name, ids2, mask2, output="last_hidden_state"))
        np.testing.assert_allclose(out[1, :11], out[2, :11], atol=1e-6 if name != "ditto" else 2e-3)


def test_mask_bias_constant_is_the_one_in_approx():
    assert approx.MASK_BIAS == -1024.0


def test_mixed_modes_take_the_two_pass_layernorm():
    """In a mixed-ring mode a LayerNorm is flax's own with use_fast_variance=False (no
    clip of a negative variance: a full-ring comparison under MPC); the single-ring
    baselines keep the model's (fast-variance) LayerNorm."""
    import flax.linen as nn

    from ditto_spu.models.intercept import ModeInterceptor

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(3.0, 2.0, (2, 5, 32)), jnp.float32)
    ln = nn.LayerNorm(epsilon=1e-12)
    params = {"params": {"scale": jnp.asarray(rng.normal(1, 0.1, 32), jnp.float32),
                         "bias": jnp.asarray(rng.normal(0, 0.1, 32), jnp.float32)}}
    two_pass = nn.LayerNorm(epsilon=1e-12, use_fast_variance=False).apply(params, x)

    def under(mode):
        def f(p, v):
            with nn.intercept_methods(ModeInterceptor(load_mode(mode))):
                return ln.apply(p, v)
        return f

    got = under("ditto")(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(two_pass), rtol=1e-6, atol=1e-6)
    ops = lambda mode: jax.make_jaxpr(under(mode))(params, x).pretty_print()  # noqa: E731
    assert " max " not in ops("ditto") and " max " in ops("puma")
