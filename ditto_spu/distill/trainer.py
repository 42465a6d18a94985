"""Quantization-aware distillation (QAD): the training loop.

The teacher is the FP32 model (mode ``exact``); the student starts from the teacher's
weights and runs under a mode and a ring policy (:func:`~.student.student_forward`). Two
stages, as MPCFormer:

1. layer-wise: relative MSE of every hidden state (embedding output included) plus the
   attention maps' (``attention_weight``), :mod:`.losses`;
2. prediction layer: ``embedding`` kind - relative MSE + (1 − cosine) of the mean-pooled
   sentence embeddings; ``classification`` - soft cross-entropy of the logits (T =
   ``temperature``); ``causal-lm`` - soft cross-entropy of every real position's
   next-token distribution (plus ``stage2_hidden_weight`` × the layer-wise loss, if set).

Range awareness (fast backend, ``range_weight`` > 0): every step also adds the ring model's
penalty on FXP32 values, products and casts within ``range_margin_bits`` of their limit
(:func:`~.fakequant.fake_quant` with ``ranges=True``). Without it nothing stops training
from scaling weights until some product leaves FXP32 under the policy: the emulator then
wraps, and SPU's truncation of a wrapped product fails, so the secure run of the student
stops matching its emulation (MiniLM after a quad-GeLU refit: cosine 0.82). With it the
student stays inside the policy it was trained for. :meth:`Distiller.range_headroom`
reports the headroom left.

Each stage has its own AdamW (linear warm-up, linear decay, no decay on bias/LayerNorm;
:mod:`.optim`). Batches are a permutation of the training set per epoch drawn from the
state's RNG key, so a resumed run sees the batches the uninterrupted run would.
Checkpoints (:mod:`.checkpoint`) are written every ``checkpoint_every`` steps, at the end
of each stage, and when the time budget runs out (the loop then stops cleanly).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ..models import load_mode, model_family
from . import losses
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .optim import is_word_embedding, make_optimizer
from .student import VocabSubset, student_forward, teacher_forward

KINDS = ("embedding", "classification", "causal-lm")


@dataclasses.dataclass
class DistillConfig:
    """Settings of one QAD run (saved with every checkpoint)."""

    kind: str = "embedding"
    mode: str = "ditto"
    policy: Optional[str] = None
    backend: str = "fast"
    seq_len: int = 64
    batch_size: int = 16
    stage1_steps: int = 100
    stage2_steps: int = 100
    lr_stage1: float = 2e-4
    lr_stage2: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    attention_weight: float = 1.0
    stage2_hidden_weight: float = 0.0  # stage 2 also keeps the hidden states close (a regulariser)
    cosine_weight: float = 1.0
    temperature: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    restrict_vocab: bool = True
    init: str = "refit"  # "refit": per-unit quadratic GeLU refit (.init); "teacher": teacher weights
    train_word_embeddings: bool = True  # False: the word-embedding table stays the teacher's
    range_weight: float = 1.0  # weight of the FXP32 range penalty (fast backend; 0 = off)
    range_margin_bits: float = 1.0  # headroom the penalty keeps below each FXP32 limit
    length_buckets: bool = True  # batches of similar lengths, cut to a bucket width (see batch_for_step)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.stage1_steps + self.stage2_steps == 0:
            raise ValueError("stage1_steps and stage2_steps must be ≥ 0 and not both 0")
        if self.init not in ("refit", "teacher"):
            raise ValueError(f"init must be 'refit' or 'teacher', got {self.init!r}")
        if self.batch_size < 1 or self.seq_len < 2:
            raise ValueError("batch_size must be ≥ 1 and seq_len ≥ 2")
        if self.range_weight < 0:
            raise ValueError(f"range_weight must be ≥ 0, got {self.range_weight}")

    @property
    def range_aware(self) -> bool:
        """Whether training penalises values near their FXP32 limits (fast backend only)."""
        return self.range_weight > 0 and self.backend == "fast"

    @property
    def total_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Batches:
    """Tokenised examples: ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32,
    ``(n, seq_len)``) and optional ``labels`` (``(n,)``)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    labels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, idx) -> dict:
        return {
            "input_ids": self.input_ids[idx],
            "attention_mask": self.attention_mask[idx],
            "token_type_ids": self.token_type_ids[idx],
        }

    def subset(self, idx) -> "Batches":
        """The examples ``idx`` (labels included) as a new :class:`Batches`."""
        return Batches(self.input_ids[idx], self.attention_mask[idx], self.token_type_ids[idx],
                       None if self.labels is None else self.labels[idx])

    def fixed_size_batches(self, batch_size: int):
        """``(batch dict, rows to keep)`` for consecutive batches of ``batch_size`` (at most
        ``len(self)``); the last batch is padded by repeating the last row, so every batch
        has one shape (one compilation)."""
        n = len(self)
        batch_size = min(batch_size, n)
        for s in range(0, n, batch_size):
            yield self.take(np.minimum(np.arange(s, s + batch_size), n - 1)), min(batch_size, n - s)

    @classmethod
    def from_encoded(cls, enc: dict, labels=None) -> "Batches":
        ids = np.asarray(enc["input_ids"], np.int32)
        return cls(
            ids,
            np.asarray(enc["attention_mask"], np.int32),
            np.asarray(enc.get("token_type_ids", np.zeros_like(ids)), np.int32),
            None if labels is None else np.asarray(labels),
        )


@dataclasses.dataclass
class DistillResult:
    """What a run did: steps done, whether it finished, the history
    (``[(step, stage, distillation loss, range penalty)]``), elapsed seconds, final
    parameters (full vocabulary)."""

    params: Any
    step: int
    finished: bool
    stopped_by_time_budget: bool
    history: list
    elapsed_s: float

    def first_last_loss(self, stage: int) -> tuple[float, float]:
        xs = [h[2] for h in self.history if h[1] == stage]
        return (xs[0], xs[-1]) if xs else (math.nan, math.nan)

    def first_last_range_penalty(self) -> tuple[float, float]:
        xs = [h[3] for h in self.history if len(h) > 3]
        return (xs[0], xs[-1]) if xs else (math.nan, math.nan)


def _output_for(kind: str) -> str:
    return {"embedding": "mean_pooled", "classification": "logits", "causal-lm": "logits"}[kind]


def _stage_loss(cfg: DistillConfig, stage: int, s, t, mask):
    if stage == 1:
        loss = losses.hidden_state_loss(s.hidden, t.hidden, mask)
        if cfg.attention_weight:
            loss = loss + cfg.attention_weight * losses.attention_loss(s.attn, t.attn, mask)
        return loss
    if cfg.kind == "embedding":
        loss = losses.embedding_loss(s.output, t.output, cfg.cosine_weight)
    elif cfg.kind == "classification":
        loss = losses.soft_cross_entropy(s.output, t.output, cfg.temperature)
    else:
        loss = losses.soft_cross_entropy(s.output, t.output, cfg.temperature, mask=mask)
    if cfg.stage2_hidden_weight:
        loss = loss + cfg.stage2_hidden_weight * losses.hidden_state_loss(s.hidden, t.hidden, mask)
    return loss


LENGTH_GROUP_BATCHES = 32  # batches per chunk sorted by length (the rest of the order stays random)


def bucket_widths(seq_len: int, smallest: int = 16) -> list[int]:
    """The widths a training batch is cut to: 16, 32, 64, … below ``seq_len``, then
    ``seq_len`` (one compilation of the step per width)."""
    widths, w = [], smallest
    while w < seq_len:
        widths.append(w)
        w *= 2
    return widths + [seq_len]


def cut_to_bucket(batch: dict, seq_len: int) -> dict:
    """``batch`` cut to the narrowest bucket width holding its longest example; unchanged
    when a padding position precedes a real token (not right-padded)."""
    mask = np.asarray(batch["attention_mask"])
    longest = int(mask.sum(axis=1).max(initial=0))
    width = next(w for w in bucket_widths(seq_len) if w >= longest)
    if width >= mask.shape[1] or mask[:, width:].any():
        return batch
    return {k: v[:, :width] for k, v in batch.items()}


class Distiller:
    """One QAD run of ``model`` (a stock HF Flax BERT / GPT-2 with the teacher's weights in
    ``model.params``) on ``train`` batches, under ``cfg``. :meth:`run` trains (resuming from
    ``run_dir`` when it holds a checkpoint of the same settings); :meth:`outputs` evaluates
    teacher or student (with the configured backend) on held-out batches.

    The word-embedding table is restricted to the rows the data uses
    (:class:`~.student.VocabSubset`, exact) unless ``cfg.restrict_vocab`` is off or the
    model has a tied LM head; ``cfg.init == "refit"`` starts the student from
    :func:`~.init.quad_gelu_refit` of the teacher's weights."""

    def __init__(self, model, cfg: DistillConfig, train: Batches, extra_ids=()):
        self.cfg = cfg
        self.full_model = model
        self.teacher_params_full = model.params
        self.train = train
        self._lengths = np.asarray(train.attention_mask).sum(axis=1)
        self._batch_order: Optional[tuple] = None
        self.vocab: Optional[VocabSubset] = None
        family_has_tied_head = cfg.kind == "causal-lm"
        if cfg.restrict_vocab and not family_has_tied_head:
            self.vocab = VocabSubset.from_ids([train.input_ids, *extra_ids], model.config.vocab_size)
            self.model = self.vocab.restrict_model(model)
            self.teacher_params = self.vocab.restrict_params(model.params)
        else:
            self.model = model
            self.teacher_params = model.params
        load_mode(cfg.mode)  # fail early on a bad mode
        out = _output_for(cfg.kind)
        self.teacher_fn = teacher_forward(self.model, out)
        self.student_fn = student_forward(self.model, cfg.mode, cfg.policy, backend=cfg.backend, output=out)
        self.ranged_fn = (
            student_forward(self.model, cfg.mode, cfg.policy, output=out, ranges=True, margin_bits=cfg.range_margin_bits)
            if cfg.backend == "fast"
            else None
        )
        self._steps: dict = {}
        self._output_fns: dict = {}
        self.init_report = None
        self.student_init = self.teacher_params
        if cfg.init == "refit":
            from .init import refit_if_applicable

            calib = dataclasses.replace(train, input_ids=self._ids(train.input_ids))
            self.student_init, self.init_report = refit_if_applicable(self.model, self.teacher_params, calib, cfg.mode)

    # -- data ------------------------------------------------------------------------------
    def _ids(self, ids):
        return ids if self.vocab is None else self.vocab.encode(ids)

    def batch_for_step(self, key, step: int) -> dict:
        """The training batch of ``step``: a fixed function of (seed, step), so a resumed
        run sees the batches it would have seen.

        Each epoch is a permutation of the training examples. With ``cfg.length_buckets``
        the permutation is cut into chunks of :data:`LENGTH_GROUP_BATCHES` batches, each
        chunk sorted by length before it is cut into batches, the epoch's batches shuffled,
        and every batch cut to the narrowest of :func:`bucket_widths` that holds its
        longest example. Exact, not an approximation: the losses count real tokens only
        and a real token never attends to padding, so the cut positions change nothing but
        the time (MiniLM on the built-in text: 21 tokens per sentence on average, padded
        to 64; a step at width 16 takes ~0.3 of one at 64)."""
        n, b = len(self.train), self.cfg.batch_size
        per_epoch = max(n // b, 1)
        epoch, i = divmod(step, per_epoch)
        batches = self._epoch_batches(key, epoch, per_epoch)
        batch = self.train.take(batches[i])
        if self.cfg.length_buckets:
            batch = cut_to_bucket(batch, self.cfg.seq_len)
        batch["input_ids"] = self._ids(batch["input_ids"])
        return batch

    def _epoch_batches(self, key, epoch: int, per_epoch: int) -> list:
        cached = self._batch_order
        if cached is not None and cached[0] == epoch:
            return cached[1]
        n, b = len(self.train), self.cfg.batch_size
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        if n < b:
            batches = [np.resize(perm, b)]
        elif not self.cfg.length_buckets:
            batches = [perm[i * b : (i + 1) * b] for i in range(per_epoch)]
        else:
            used = perm[: per_epoch * b]
            lengths = self._lengths[used]
            batches = []
            group = LENGTH_GROUP_BATCHES * b
            for s in range(0, len(used), group):
                chunk = used[s : s + group][np.argsort(lengths[s : s + group], kind="stable")]
                batches.extend(chunk[j : j + b] for j in range(0, len(chunk), b))
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(batches))
            batches = [batches[k] for k in order]
        self._batch_order = (epoch, batches)
        return batches

    # -- steps -----------------------------------------------------------------------------
    def optimizer(self, stage: int):
        cfg = self.cfg
        steps = cfg.stage1_steps if stage == 1 else cfg.stage2_steps
        lr = cfg.lr_stage1 if stage == 1 else cfg.lr_stage2
        frozen = None if cfg.train_word_embeddings else is_word_embedding
        return make_optimizer(lr, steps, warmup_fraction=cfg.warmup_fraction, weight_decay=cfg.weight_decay,
                              frozen=frozen)

    def loss_fn(self, stage: int) -> Callable:
        cfg = self.cfg

        def loss(params, teacher_params, batch):
            """(total loss, (distillation loss, range penalty per example))."""
            args = (batch["input_ids"], batch["attention_mask"])
            tt = batch["token_type_ids"] if self._is_bert else None
            t = jax.lax.stop_gradient(self.teacher_fn(teacher_params, *args, tt))
            if not cfg.train_word_embeddings:  # no gradient computed for the frozen table
                flat = traverse_util.flatten_dict(params)
                params = traverse_util.unflatten_dict(
                    {k: jax.lax.stop_gradient(v) if is_word_embedding(k) else v for k, v in flat.items()}
                )
            if cfg.range_aware:
                s, taps = self.ranged_fn(params, *args, tt)
                penalty = taps.penalty / batch["input_ids"].shape[0]
            else:
                s, penalty = self.student_fn(params, *args, tt), jnp.zeros((), jnp.float32)
            distill = _stage_loss(cfg, stage, s, t, batch["attention_mask"])
            return distill + cfg.range_weight * penalty, (distill, penalty)

        return loss

    @property
    def _is_bert(self) -> bool:
        return model_family(self.model) == "bert"

    def step_fn(self, stage: int):
        if stage not in self._steps:
            opt = self.optimizer(stage)
            loss = self.loss_fn(stage)

            def step(params, opt_state, teacher_params, batch):
                (_, (value, penalty)), grads = jax.value_and_grad(loss, has_aux=True)(params, teacher_params, batch)
                updates, opt_state = opt.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, value, penalty

            self._steps[stage] = jax.jit(step)
        return self._steps[stage]

    def initial_state(self, stage: int = 1, params=None) -> dict:
        params = self.student_init if params is None else params
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
        return {
            "params": params,
            "opt_state": self.optimizer(stage).init(params),
            "step": 0,
            "rng": jax.random.PRNGKey(self.cfg.seed),
            "stage": stage,
        }

    # -- the loop --------------------------------------------------------------------------
    def run(
        self,
        run_dir=None,
        *,
        time_budget_s: Optional[float] = None,
        progress: bool = True,
        on_step: Optional[Callable[[int, int, float], None]] = None,
    ) -> DistillResult:
        cfg = self.cfg
        t_start = time.time()
        history: list = []
        elapsed_before = 0.0
        state = self.initial_state(1 if cfg.stage1_steps else 2)
        if run_dir is not None:
            meta = read_checkpoint_meta(run_dir)
            if meta is not None:
                if meta.get("config") != cfg.to_dict():
                    diff = {k: (meta.get("config", {}).get(k), v) for k, v in cfg.to_dict().items() if meta.get("config", {}).get(k) != v}
                    raise CheckpointError(
                        f"{run_dir} holds a checkpoint of a run with other settings {diff} "
                        "(saved, now): use another --out or the same settings"
                    )
                stage = meta["stage"]
                template = self.initial_state(stage)
                state = load_checkpoint(run_dir, template)
                history = [tuple(h) for h in meta.get("history", [])]
                elapsed_before = float(meta.get("elapsed_s", 0.0))
        step = int(state["step"])

        def save():
            if run_dir is None:
                return
            meta = {
                "config": cfg.to_dict(),
                "step": int(state["step"]),
                "stage": int(state["stage"]),
                "history": history,
                "elapsed_s": elapsed_before + time.time() - t_start,
                "vocab_subset": None if self.vocab is None else int(self.vocab.size),
            }
            save_checkpoint(run_dir, state, meta)

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.total_steps, initial=step, desc="QAD", unit="step", dynamic_ncols=True)
        stopped = False
        try:
            while step < cfg.total_steps:
                stage = 1 if step < cfg.stage1_steps else 2
                if stage != int(state["stage"]):
                    # a new stage: a fresh optimizer (own schedule) on the current parameters
                    state = {**state, "opt_state": self.optimizer(stage).init(state["params"]), "stage": stage}
                batch = self.batch_for_step(state["rng"], step)
                params, opt_state, loss, penalty = self.step_fn(stage)(
                    state["params"], state["opt_state"], self.teacher_params, batch
                )
                loss, penalty = float(loss), float(penalty)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"QAD loss became {loss} at step {step} (stage {stage}): lower the learning "
                        "rate or check the policy's fraction bits"
                    )
                step += 1
                state = {"params": params, "opt_state": opt_state, "step": step, "rng": state["rng"], "stage": stage}
                history.append((step, stage, loss, penalty))
                if bar is not None:
                    bar.set_postfix(stage=stage, loss=f"{loss:.4g}", range=f"{penalty:.3g}")
                    bar.update(1)
                if on_step is not None:
                    on_step(step, stage, loss)
                end_of_stage = step in (cfg.stage1_steps, cfg.total_steps)
                if end_of_stage or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    save()
                if time_budget_s is not None and time.time() - t_start >= time_budget_s and step < cfg.total_steps:
                    save()
                    stopped = True
                    break
        finally:
            if bar is not None:
                bar.close()
        return DistillResult(
            params=self.full_params(state["params"]),
            step=step,
            finished=step >= cfg.total_steps,
            stopped_by_time_budget=stopped,
            history=history,
            elapsed_s=elapsed_before + time.time() - t_start,
        )

    # -- parameters --------------------------------------------------------------------------
    @property
    def initial_params(self):
        """The student's starting parameters (full vocabulary)."""
        return self.full_params(self.student_init)

    def full_params(self, params):
        """Trained parameters on the full vocabulary (word-table rows not in use = teacher's)."""
        if self.vocab is None:
            return params
        return self.vocab.expand_params(params, self.teacher_params_full)

    def restricted(self, full_params):
        return full_params if self.vocab is None else self.vocab.restrict_params(full_params)

    # -- evaluation with the training backend -------------------------------------------------
    def outputs(self, params_full, data: Batches, *, student: bool, batch_size: int = 32) -> np.ndarray:
        """Model outputs (embeddings / logits) of the student (under the mode) or the teacher."""
        return np.concatenate(list(self._batched_outputs(params_full, data, student, batch_size, lambda o, b: o)))

    def next_token_nll(self, params_full, data: Batches, *, student: bool, batch_size: int = 8) -> tuple[float, int]:
        """(Σ −log p(next token), scored tokens) over the real positions of ``data`` (a causal
        LM: position t predicts token t+1 when both are real), reduced batch by batch so
        no (examples × seq × vocab) array is held. Perplexity = exp(Σ / n)."""
        from ..metrics import token_nll

        def reduce(logits, b):
            ids, mask = b["input_ids"], np.asarray(b["attention_mask"], bool)
            return np.array([token_nll(logits[:, :-1], ids[:, 1:], mask[:, 1:] & mask[:, :-1])])

        sums = np.concatenate(list(self._batched_outputs(params_full, data, student, batch_size, reduce)))
        return float(sums[:, 0].sum()), int(sums[:, 1].sum())

    def _batched_outputs(self, params_full, data: Batches, student: bool, batch_size: int, per_batch):
        """``per_batch(outputs, batch)`` for consecutive batches of ``data`` (float64 outputs,
        the padding rows of the last batch removed; ``batch`` in the data's own token ids)."""
        fn = self.student_fn if student else self.teacher_fn
        params = self.restricted(params_full)
        tt_on = self._is_bert
        run = self._output_fns.get(student)
        if run is None:
            if hasattr(fn, "evaluate"):  # the reference emulator: float64 numpy results
                run = lambda p, i, m, t: fn.evaluate(p, i, m, t if tt_on else None).output  # noqa: E731
            else:
                run = jax.jit(lambda p, i, m, t: fn(p, i, m, t if tt_on else None).output)
            self._output_fns[student] = run
        for b, keep in data.fixed_size_batches(batch_size):
            o = run(params, self._ids(b["input_ids"]), b["attention_mask"], b["token_type_ids"])
            yield per_batch(np.asarray(o, np.float64)[:keep], {k: v[:keep] for k, v in b.items()})


    def range_headroom(self, params_full, data: Batches, *, batch_size: int = 32) -> dict:
        """Smallest headroom in bits below the FXP32 limits (:mod:`~ditto_spu.semantics.report`)
        the student's values reach on ``data``, per layer and kind of record, measured with
        the fast backend: ``{"<layer> <kind>": bits}`` (negative: the value leaves its ring,
        and the secure run would wrap there)."""
        from ..semantics.report import layer_of

        if self.ranged_fn is None:
            raise ValueError("range checks use the fast backend; this run uses " + repr(self.cfg.backend))
        if "ranges" not in self._output_fns:
            tt_on = self._is_bert
            self._output_fns["ranges"] = jax.jit(
                lambda p, i, m, t: self.ranged_fn(p, i, m, t if tt_on else None)[1]
            )
        run = self._output_fns["ranges"]
        params = self.restricted(params_full)
        worst: dict = {}
        for b, _ in data.fixed_size_batches(batch_size):
            taps = run(params, self._ids(b["input_ids"]), b["attention_mask"], b["token_type_ids"])
            for (scope, kind), h in taps.headroom_bits().items():
                key = f"{layer_of(scope)} {kind}"
                worst[key] = min(worst.get(key, math.inf), h)
        return dict(sorted(worst.items(), key=lambda kv: kv[1]))


def summarize(result: DistillResult) -> dict:
    s1 = result.first_last_loss(1)
    s2 = result.first_last_loss(2)
    return {
        "steps": result.step,
        "finished": result.finished,
        "stopped_by_time_budget": result.stopped_by_time_budget,
        "elapsed_s": round(result.elapsed_s, 1),
        "stage1_loss_first_last": s1,
        "stage2_loss_first_last": s2,
        "range_penalty_first_last": result.first_last_range_penalty(),
    }


def save_student(model, params, out_dir, tokenizer=None, extra: Optional[dict] = None) -> Path:
    """Write the student as a HF model directory (``config.json`` + ``flax_model.msgpack``,
    plus the tokenizer) that :func:`ditto_spu.models.load_model` loads unchanged."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    model.save_pretrained(str(out_dir), params=params)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(out_dir))
    if extra:
        (out_dir / "distill.json").write_text(json.dumps(extra, indent=2, default=float) + "\n")
    return out_dir
