"""The fast training model of the rings agrees with the reference emulator."""

import jax
import numpy as np

from ditto_spu.distill.fakequant import fake_quant
from ditto_spu.models import load_mode, load_model, prepare_params, secure_forward
from ditto_spu.quant import emulate


def test_fake_quant_matches_emulator_on_tiny_bert_ditto():
    model = load_model("tiny", num_hidden_layers=1)
    mode = load_mode("ditto")
    fwd = secure_forward(model, mode, output="last_hidden_state", one_hot=False)

    def f(p, ids, mask):
        return fwd(prepare_params(p, mode), ids, mask)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, (2, 8)).astype(np.int32)
    mask = np.ones((2, 8), np.int32)
    mask[1, 5:] = 0
    ref = emulate(f, None).evaluate(model.params, ids, mask)
    fast = np.asarray(jax.jit(fake_quant(f, None))(model.params, ids, mask))
    plain = np.asarray(jax.jit(secure_forward(model, mode.all_high(), output="last_hidden_state", one_hot=False))(model.params, ids, mask))
    err_fast = np.abs(fast - ref).max()
    err_plain = np.abs(plain - ref).max()
    assert err_fast < 2e-3, err_fast  # a few FXP32[f=8] ulps (2^-8 = 3.9e-3) at most
    assert err_fast < err_plain / 10  # and far closer than ignoring the rings

    grads = jax.grad(lambda p: fake_quant(f, None)(p, ids, mask).sum())(model.params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert sum(float(np.abs(np.asarray(g)).sum()) for g in leaves) > 0  # straight-through gradients flow
