"""Range-aware QAD: the trained student stays inside its policy's rings, so its secure run
computes what its emulation does.

A tiny BERT under a policy with many FXP32 fraction bits (f = 15: a product must stay below
2^(30 − 30) = 1 before truncation): the quad-GeLU refit that starts the student already
pushes a product out of its ring; training with the range penalty brings it back inside,
and the three-party run of the saved student agrees with the emulator.
"""

import pytest

from ditto_spu.data import builtin_corpus
from ditto_spu.distill.student import HashTokenizer, encode_texts
from ditto_spu.distill.trainer import Batches, DistillConfig, Distiller, save_student
from ditto_spu.models import load_model
from ditto_spu.policy import load_policy
from ditto_spu.rings import RingSpec

SEQ = 16


@pytest.fixture(scope="module")
def setting():
    tiny = load_model("tiny", num_hidden_layers=1)
    corpus = builtin_corpus()
    train = Batches.from_encoded(encode_texts(HashTokenizer(512), corpus.train[:16], SEQ))
    ring = RingSpec.parse("FXP32[f=15]")
    policy = load_policy(None).with_override("*", float16=ring, bfloat16=ring)
    return tiny, corpus, train, policy


def _distiller(setting, range_weight, steps=(10, 10)):
    tiny, _, train, policy = setting
    cfg = DistillConfig(seq_len=SEQ, batch_size=8, stage1_steps=steps[0], stage2_steps=steps[1], lr_stage1=1e-3,
                        lr_stage2=1e-3, policy=policy, range_weight=range_weight, init="refit")
    return Distiller(tiny, cfg, train)


def test_range_penalty_brings_the_student_back_inside_its_rings(setting, tmp_path):
    from ditto_spu.infer import secure_inference

    tiny, corpus, train, policy = setting
    d = _distiller(setting, range_weight=1.0)
    start = d.range_headroom(d.initial_params, train)
    assert min(start.values()) < 0  # the refit start leaves FXP32[f=15] somewhere

    result = d.run(None, progress=False)
    assert result.history[0][3] > 0 and result.history[-1][3] < 0.1 * result.history[0][3]
    after = d.range_headroom(result.params, train)
    assert min(after.values()) > 0.5, after  # back inside, most of the 1-bit margin kept

    student = load_model(str(save_student(tiny, result.params, tmp_path / "student")))
    secure = secure_inference(student, "ditto", corpus.train[3], seq_len=SEQ, policy=policy)
    assert secure.cosine_emulation >= 0.9999, secure.cosine_emulation


def test_without_the_penalty_training_does_not_repair_the_ranges(setting):
    d = _distiller(setting, range_weight=0.0, steps=(4, 0))
    assert not d.cfg.range_aware
    start = min(d.range_headroom(d.initial_params, d.train).values())
    result = d.run(None, progress=False)
    assert all(h[3] == 0.0 for h in result.history)  # no penalty computed
    assert min(d.range_headroom(result.params, d.train).values()) < 0 and start < 0


def test_margin_applies_to_ring_limits_not_to_kernel_bounds():
    import jax.numpy as jnp

    from ditto_spu.semantics.arith import TrainingArithmetic
    from ditto_spu.semantics.report import bound_kind, limit_of

    ring = RingSpec.parse("FXP32[f=12]")
    arith = TrainingArithmetic((32, 1.0))
    arith.record("s", ring, bound_kind(2000), jnp.array([-1150.0, 10.0]))  # inside the bound, < 1 bit below
    assert float(arith.penalty) == 0.0
    arith.record("s", ring, bound_kind(2000), jnp.array([2400.0]))  # beyond the bound itself
    over = float(arith.penalty)
    assert over > 0
    arith.record("s", ring, "product", jnp.array([0.75 * limit_of(ring, "product")]))  # ring limit: margin applies
    assert float(arith.penalty) > over
