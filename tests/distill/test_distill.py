"""QAD on a tiny random BERT: the losses, the optimizer, the fast ring model, a short
distillation that lowers the loss, checkpoints, resume, time budget, CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ditto_spu.data import builtin_corpus
from ditto_spu.distill import losses
from ditto_spu.distill.checkpoint import CheckpointError, read_checkpoint_meta
from ditto_spu.distill.optim import decay_mask, warmup_linear_schedule
from ditto_spu.distill.student import HashTokenizer, VocabSubset, encode_texts, teacher_forward
from ditto_spu.distill.trainer import Batches, DistillConfig, Distiller
from ditto_spu.errors import DittoError
from ditto_spu.models import load_model

SEQ = 16


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", num_hidden_layers=1)


@pytest.fixture(scope="module")
def data():
    corpus = builtin_corpus()
    tok = HashTokenizer(512)
    return (
        Batches.from_encoded(encode_texts(tok, corpus.train[:8], SEQ)),
        Batches.from_encoded(encode_texts(tok, corpus.held_out[:8], SEQ)),
    )


@pytest.fixture(scope="module")
def distiller(tiny, data):
    train, held = data
    cfg = DistillConfig(seq_len=SEQ, batch_size=8, stage1_steps=5, stage2_steps=5,
                        lr_stage1=3e-4, lr_stage2=3e-4, warmup_fraction=0.0, checkpoint_every=2,
                        init="teacher")  # from the teacher's weights: the loss the mode causes
    return Distiller(tiny, cfg, train, extra_ids=[held.input_ids])


# ---- losses / optimizer ---------------------------------------------------------------


def test_losses_known_values():
    mask = jnp.array([[1, 1, 0]])
    t = jnp.ones((1, 3, 2))
    s = t.at[0, 2].set(100.0)  # only the padding position differs
    assert float(losses.hidden_state_loss([s], [t], mask)) == 0.0
    assert float(losses.hidden_state_loss([2 * t], [t], mask)) == pytest.approx(1.0)
    uniform = jnp.zeros((2, 4))
    assert float(losses.soft_cross_entropy(uniform, uniform)) == pytest.approx(np.log(4))
    a = jnp.array([[1.0, 0.0]])
    assert float(losses.embedding_loss(a, a)) == 0.0
    assert float(losses.embedding_loss(jnp.array([[0.0, 1.0]]), a)) == pytest.approx(2.0 + 1.0)
    att = jnp.full((1, 1, 3, 3), 0.5)
    assert float(losses.attention_loss([att.at[..., 2].set(9.0)], [att], mask)) == 0.0


def test_no_weight_decay_on_bias_and_layernorm(tiny):
    flat = traverse_util.flatten_dict(decay_mask(tiny.params))
    assert flat[("encoder", "layer", "0", "attention", "self", "query", "kernel")]
    assert flat[("embeddings", "word_embeddings", "embedding")]
    assert not flat[("encoder", "layer", "0", "attention", "self", "query", "bias")]
    assert not flat[("embeddings", "LayerNorm", "scale")]
    assert not any(v for k, v in flat.items() if "LayerNorm" in k)


def test_warmup_then_linear_decay():
    sched = warmup_linear_schedule(1.0, 10, 0.2)
    assert [float(sched(i)) for i in (0, 1, 2, 6, 10)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])


# ---- vocabulary subset / fast ring model ---------------------------------------------------


def test_vocab_subset_gives_identical_outputs(tiny, data):
    train, _ = data
    vs = VocabSubset.from_ids([train.input_ids], 512)
    assert vs.size < 512
    f_full = jax.jit(teacher_forward(tiny, "mean_pooled"))
    f_small = jax.jit(teacher_forward(vs.restrict_model(tiny), "mean_pooled"))
    full = f_full(tiny.params, train.input_ids, train.attention_mask, train.token_type_ids)
    small = f_small(vs.restrict_params(tiny.params), vs.encode(train.input_ids), train.attention_mask, train.token_type_ids)
    np.testing.assert_allclose(small.output, full.output, rtol=1e-5, atol=1e-6)
    assert len(full.hidden) == 2 and len(full.attn) == 1 and full.attn[0].shape == (8, 4, SEQ, SEQ)
    back = vs.expand_params(vs.restrict_params(tiny.params), tiny.params)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), back, tiny.params))


def test_hash_tokenizer_is_deterministic_and_padded():
    enc = HashTokenizer(64)(["Hello world", "a b c d e f g h"], max_length=6)
    assert enc["input_ids"][0].tolist()[:1] == [1] and enc["input_ids"][0, 3] == 63
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert (HashTokenizer(64)(["Hello world"], max_length=6)["input_ids"] == enc["input_ids"][:1]).all()


# ---- distillation ----------------------------------------------------------------------------


def _loss_on_all(d, stage, params_full, data):
    batch = data.take(slice(None))
    batch["input_ids"] = d._ids(batch["input_ids"])
    _, (distill, _) = jax.jit(d.loss_fn(stage))(d.restricted(params_full), d.teacher_params, batch)
    return float(distill)


def test_short_distillation_lowers_both_losses(distiller, tiny, data):
    train, _ = data  # batch = whole set: every step sees the same 8 sentences
    before2 = _loss_on_all(distiller, 2, tiny.params, train)
    result = distiller.run(None, progress=False)
    assert result.finished and result.step == 10 and [h[1] for h in result.history] == [1] * 5 + [2] * 5
    # the loss logged at a step is the loss of the parameters before that step's update
    stage1 = [h[2] for h in result.history if h[1] == 1]
    stage2 = [h[2] for h in result.history if h[1] == 2]
    assert stage1[0] > 1e-4 and before2 > 1e-4  # the mode really changes the model
    assert stage1[0] == pytest.approx(_loss_on_all(distiller, 1, distiller.initial_params, train), rel=1e-4)
    assert stage1[-1] < 0.8 * stage1[0], stage1  # layer-wise loss falls in 4 updates
    after2 = _loss_on_all(distiller, 2, result.params, train)
    assert stage2[-1] < stage2[0] and after2 < 0.8 * stage2[0], (stage2, after2)
    assert after2 < before2  # the final student beats the teacher's weights under the mode


def test_checkpoint_resume_matches_uninterrupted_run(distiller, tmp_path):
    straight = distiller.run(None, progress=False)
    # time budget 0: stops cleanly after the first step, with a checkpoint
    first = distiller.run(tmp_path, time_budget_s=0.0, progress=False)
    assert first.stopped_by_time_budget and not first.finished and first.step == 1
    meta = read_checkpoint_meta(tmp_path)
    assert meta["step"] == 1 and meta["stage"] == 1 and len(meta["history"]) == 1
    resumed = distiller.run(tmp_path, progress=False)
    assert resumed.finished and resumed.step == 10
    assert [h[0] for h in resumed.history] == list(range(1, 11))
    np.testing.assert_allclose([h[2] for h in resumed.history], [h[2] for h in straight.history], rtol=1e-4)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), resumed.params, straight.params)
    assert read_checkpoint_meta(tmp_path)["step"] == 10


def test_resume_with_other_settings_is_refused(distiller, tiny, data, tmp_path):
    distiller.run(tmp_path, time_budget_s=0.0, progress=False)
    other = Distiller(tiny, DistillConfig(seq_len=SEQ, batch_size=4, stage1_steps=5, stage2_steps=5, init="teacher"), data[0])
    with pytest.raises(CheckpointError, match="batch_size"):
        other.run(tmp_path, progress=False)


def test_cli_distill_then_eval(tmp_path, capsys):
    from ditto_spu.cli.main import main as cli_main

    out = tmp_path / "run"
    rc = cli_main(["distill", "--teacher", "tiny", "--mode", "ditto", "--data", "builtin", "--out", str(out),
                           "--stage1-steps", "2", "--stage2-steps", "0", "--seq-len", "12", "--batch-size", "4",
                           "--max-train", "8", "--max-held-out", "4", "--skip-eval", "--no-progress", "--init", "teacher"])
    assert rc == 0
    summary = json.loads((out / "distill.json").read_text())
    assert summary["steps"] == 2 and summary["finished"] and summary["config"]["init"] == "teacher"
    assert (out / "student" / "flax_model.msgpack").exists() and (out / "checkpoint.msgpack").exists()
    student = load_model(str(out / "student"))  # loads like any model for the secure path
    assert student.config.num_hidden_layers == 2
    # the student records how it must run: mode, policy (inline) and teacher
    from ditto_spu.models.saved import read_run_settings
    from ditto_spu.policy import Policy

    settings = read_run_settings(out)
    assert settings.mode == "ditto" and settings.teacher == "tiny" and settings.policy == Policy()
    assert settings.source.endswith("ditto_spu.json")
    capsys.readouterr()
    rc = cli_main(["eval", "--teacher", "tiny", "--student", str(out), "--mode", "ditto", "--data", "builtin",
                           "--backend", "fast", "--num", "4", "--seq-len", "12"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["examples"] == 4
    assert -1 <= report["cosine_before"] <= 1 and -1 <= report["cosine_after"] <= 1
    assert report["cosine_after"] != report["cosine_before"]
    # the secure check: the student's 3-party run against its emulation and the teacher
    # (mode and policy taken from the student's directory)
    rc = cli_main(["eval", "--teacher", "tiny", "--student", str(out), "--data", "builtin",
                           "--num", "2", "--seq-len", "12", "--secure", "1"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["secure_examples"] == 1 and report["mode"] == "ditto"
    assert report["secure_vs_emulation_min"] > 0.999 and report["secure_vs_emulation_rel_l2_max"] < 0.05
    assert report["after_fxp32_overflowing_scopes"] == []


def test_quad_gelu_refit_shrinks_the_ffn_gap(tiny, data):
    from ditto_spu.approx import gelu_quad
    from ditto_spu.distill.init import quad_gelu_refit, quadratic_coefficients

    assert quadratic_coefficients(gelu_quad) == pytest.approx((0.125, 0.25, 0.5))
    _, report = quad_gelu_refit(tiny, tiny.params, data[0])
    assert len(report) == 1 and report[0]["tokens"] == int(data[0].attention_mask.sum())
    assert report[0]["rms_gelu_vs_refit"] < 0.3 * report[0]["rms_gelu_vs_quad"]


def test_cli_data_specs_glue_file_builtin(tmp_path):
    from pathlib import Path

    from ditto_spu.distill import run as distill_run

    glue_dir = Path(__file__).resolve().parents[1] / "data" / "glue" / "RTE"
    spec = distill_run.parse_data_spec(f"glue:RTE:{glue_dir}")
    train, dev, desc = distill_run.training_data(spec, 16, HashTokenizer(64))
    assert (len(train), len(dev)) == (4, 3) and dev.labels.tolist() == [1, 0, 1]
    assert train.token_type_ids.max() == 1 and "RTE" in desc
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"This is sentence number {i} of a small corpus." for i in range(20)))
    train, held, _ = distill_run.training_data(distill_run.parse_data_spec(str(text)), 16, HashTokenizer(64))
    assert len(train) + len(held) == 20 and len(held) >= 1
    with pytest.raises(DittoError, match="glue:TASK:DIR"):
        distill_run.parse_data_spec("glue:RTE")


def test_cli_eval_reports_gpt2_perplexity(tmp_path, capsys):
    from ditto_spu.cli.main import main as cli_main
    from ditto_spu.distill import run as distill_run
    from ditto_spu.metrics import perplexity, token_nll

    out = tmp_path / "run"
    rc = cli_main(["distill", "--teacher", "tiny-gpt2", "--mode", "ditto", "--data", "builtin", "--out",
                           str(out), "--stage1-steps", "3", "--stage2-steps", "3", "--seq-len", "12",
                           "--batch-size", "4", "--max-train", "8", "--max-held-out", "4", "--skip-eval",
                           "--no-progress", "--init", "teacher"])
    assert rc == 0
    capsys.readouterr()
    rc = cli_main(["eval", "--teacher", "tiny-gpt2", "--student", str(out), "--mode", "ditto", "--data",
                           "builtin", "--backend", "fast", "--num", "4", "--seq-len", "12"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["examples"] == 4
    # the teacher's perplexity, computed here from the stock model's own logits
    teacher = load_model("tiny-gpt2")
    _, held, _ = distill_run.training_data(distill_run.parse_data_spec("builtin"), 12, HashTokenizer(512), max_train=0, max_held=4)
    logits = np.asarray(teacher(held.input_ids, attention_mask=held.attention_mask).logits)
    m = held.attention_mask.astype(bool)
    nll, n = token_nll(logits[:, :-1], held.input_ids[:, 1:], m[:, 1:] & m[:, :-1])
    assert report["scored_tokens"] == n
    assert report["perplexity_teacher"] == pytest.approx(perplexity(nll, n), rel=1e-3)
    assert report["perplexity_after"] != report["perplexity_before"] and report["perplexity_before"] > 1


def test_frozen_word_embeddings_stay_the_teachers(tiny, data):
    from ditto_spu.distill.optim import is_word_embedding

    train, held = data
    cfg = DistillConfig(seq_len=SEQ, batch_size=8, stage1_steps=3, stage2_steps=0, lr_stage1=1e-3,
                        warmup_fraction=0.0, init="teacher", train_word_embeddings=False)
    result = Distiller(tiny, cfg, train, extra_ids=[held.input_ids]).run(None, progress=False)
    before = traverse_util.flatten_dict(tiny.params)
    after = traverse_util.flatten_dict(result.params)
    changed = {k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))}
    assert not {k for k in changed if is_word_embedding(k)}
    assert any(k[-1] == "kernel" for k in changed)  # the rest trains


def test_stage2_hidden_weight_adds_the_layerwise_loss():
    from ditto_spu.distill.student import Taps
    from ditto_spu.distill.trainer import _stage_loss

    mask = jnp.ones((1, 3), jnp.int32)
    t = Taps(jnp.ones((1, 4)), hidden=(jnp.ones((1, 3, 2)),))
    s = Taps(jnp.ones((1, 4)), hidden=(2 * jnp.ones((1, 3, 2)),))  # same output, hidden off by 100 %
    plain = DistillConfig(stage1_steps=1)
    regular = DistillConfig(stage1_steps=1, stage2_hidden_weight=0.5)
    assert float(_stage_loss(plain, 2, s, t, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(_stage_loss(regular, 2, s, t, mask)) == pytest.approx(0.5 * 1.0)


def test_student_sees_the_weights_the_secure_run_encodes(tiny, data):
    """The student's ring model takes its weights as the secure run does: cast to the
    mode's dtypes, then encoded with each argument's own fraction bits (the policy's
    per-argument overrides), not in the ring of a cast inside the function."""
    from ditto_spu.distill.student import student_forward
    from ditto_spu.models import load_mode, prepare_params, secure_forward
    from ditto_spu.policy import load_policy
    from ditto_spu.quant import emulate
    from ditto_spu.rings import RingSpec

    fine = RingSpec.parse("FXP32[f=14]")
    policy = load_policy(None).with_override("[[]0]*", float16=fine, bfloat16=fine)  # every weight at f = 14
    train, _ = data
    ids, mask = train.input_ids[:2], train.attention_mask[:2]
    mode = load_mode("ditto")
    secure = emulate(secure_forward(tiny, mode, output="mean_pooled", one_hot=False), policy)
    want = np.asarray(secure.evaluate(prepare_params(tiny.params, mode), ids, mask))
    for backend in ("emulator", "fast"):
        fn = student_forward(tiny, mode, policy, backend=backend, output="mean_pooled", attentions=False)
        got = fn.evaluate(tiny.params, ids, mask) if backend == "emulator" else jax.jit(fn)(tiny.params, ids, mask)
        np.testing.assert_allclose(np.asarray(got.output, np.float64), want, atol=2e-3, err_msg=backend)
    coarse = emulate(secure_forward(tiny, mode, output="mean_pooled", one_hot=False), None)
    other = np.asarray(coarse.evaluate(prepare_params(tiny.params, mode), ids, mask))
    assert np.abs(other - want).max() > 5 * 2e-3  # the weights' fraction bits do matter here


def test_cli_eval_reports_neighbour_metrics(tmp_path, capsys):
    """``eval`` (and distill's held-out summary, same helper) report the semantic-search
    metrics vs the FP32 teacher, before and after, in range; None on < 3 sentences. The
    student: the tiny teacher's weights, perturbed (no distillation run: keeps this fast)."""
    from ditto_spu.cli.main import main as cli_main
    from ditto_spu.distill import run as distill_run
    from ditto_spu.distill.trainer import save_student

    teacher = load_model("tiny")  # what eval --teacher tiny loads (seed 0)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) * (1 + 0.3 * rng.standard_normal(np.shape(x))), teacher.params)
    save_student(teacher, params, tmp_path / "student")
    argv = ["eval", "--teacher", "tiny", "--student", str(tmp_path / "student"), "--mode", "ditto", "--data",
            "builtin", "--backend", "fast", "--seq-len", "12"]
    rc = cli_main(argv + ["--num", "5"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert rc == 0 and report["examples"] == 5 and "cosine_after" in report
    for when in ("before", "after"):
        assert report[f"neighbour_agreement_{when}"] in {k / 5 for k in range(6)}
        assert -1 <= report[f"similarity_spearman_{when}"] <= 1
    assert report["similarity_spearman_after"] != report["similarity_spearman_before"]
    assert "top-1 neighbour agreement" in captured.err and "Spearman" in captured.err
    rc = cli_main(argv + ["--num", "2"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert rc == 0 and report["neighbour_agreement_after"] is None and report["similarity_spearman_after"] is None
    assert "cosine_after" in report and "at least 3 sentences" in captured.err
    # the keys distill's held-out summary gets
    emb = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    keys = distill_run.task_metrics(emb, {"before": emb, "after": emb[::-1]}, prefix="held_out_")
    assert keys["held_out_neighbour_agreement_before"] == 1.0
    assert keys["held_out_similarity_spearman_before"] == pytest.approx(1.0)
    assert set(keys) == {f"held_out_{m}_{w}" for m in ("neighbour_agreement", "similarity_spearman")
                         for w in ("before", "after")}


def test_cli_extra_text_adds_training_sentences_only(tmp_path):
    from ditto_spu.distill import run as distill_run

    builtin = distill_run.parse_data_spec("builtin")
    train0, held0, _ = distill_run.training_data(builtin, 16, HashTokenizer(64))
    extra = tmp_path / "more.txt"
    held_sentence = __import__("ditto_spu.data", fromlist=["builtin_corpus"]).builtin_corpus().held_out[0]
    extra.write_text(f"An extra training sentence for the student.\n\n{held_sentence}\n", encoding="utf-8")
    train, held, desc = distill_run.training_data(builtin, 16, HashTokenizer(64), extra_text=str(extra))
    assert len(train) == len(train0) + 1 and "+1 sentences" in desc  # the held-out sentence is not added
    assert (held.input_ids == held0.input_ids).all()
    train, held, desc = distill_run.training_data(builtin, 16, HashTokenizer(64), extra_text="stdlib")
    assert len(train) > 5 * len(train0) and (held.input_ids == held0.input_ids).all()
    with pytest.raises(DittoError, match="extra-text"):
        distill_run.training_data(builtin, 16, HashTokenizer(64), extra_text=str(tmp_path / "missing.txt"))


# ---- length buckets ------------------------------------------------------------------------


def test_bucket_widths_and_cut():
    from ditto_spu.distill.trainer import bucket_widths, cut_to_bucket

    assert bucket_widths(64) == [16, 32, 64]
    assert bucket_widths(100) == [16, 32, 64, 100]
    assert bucket_widths(16) == [16]
    mask = np.zeros((2, 64), np.int32)
    mask[0, :20], mask[1, :9] = 1, 1
    batch = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": 0 * mask}
    cut = cut_to_bucket(batch, 64)
    assert {k: v.shape for k, v in cut.items()} == {k: (2, 32) for k in batch}
    np.testing.assert_array_equal(cut["input_ids"], batch["input_ids"][:, :32])
    left = {k: v[:, ::-1].copy() for k, v in batch.items()}  # left-padded: nothing may be cut
    assert cut_to_bucket(left, 64)["attention_mask"].shape == (2, 64)


def test_length_buckets_change_nothing_but_the_width(tiny):
    """The loss of a batch cut to its bucket equals the loss at the full width (the losses
    count real tokens; real tokens never attend to padding), and an epoch's batches hold
    every example once, most of them cut below the full width."""
    corpus = builtin_corpus()
    tok = HashTokenizer(512)
    train = Batches.from_encoded(encode_texts(tok, corpus.train[:64], 64))
    cfg = DistillConfig(seq_len=64, batch_size=8, stage1_steps=8, stage2_steps=8, init="teacher")
    d = Distiller(tiny, cfg, train)
    key = jax.random.PRNGKey(0)
    batches = [d.batch_for_step(key, s) for s in range(8)]
    widths = [b["input_ids"].shape[1] for b in batches]
    assert max(widths) <= 64 and sum(widths) / len(widths) < 48, widths
    seen = sorted(i for b in d._epoch_batches(key, 0, 8) for i in b)
    assert seen == list(range(64))
    full = {k: np.asarray(v) for k, v in train.take(d._epoch_batches(key, 0, 8)[0]).items()}
    full["input_ids"] = d._ids(full["input_ids"])
    cut = batches[0]
    assert cut["input_ids"].shape[1] < 64
    for stage in (1, 2):
        loss = jax.jit(d.loss_fn(stage))
        (_, (a, _)), (_, (b, _)) = loss(d.student_init, d.teacher_params, full), loss(d.student_init, d.teacher_params, cut)
        assert float(a) > 1e-4 and float(b) == pytest.approx(float(a), rel=1e-5), (stage, a, b)
    plain = Distiller(tiny, DistillConfig(seq_len=64, batch_size=8, stage1_steps=8, stage2_steps=8, init="teacher",
                                          length_buckets=False), train)
    assert all(plain.batch_for_step(key, s)["input_ids"].shape[1] == 64 for s in range(8))
