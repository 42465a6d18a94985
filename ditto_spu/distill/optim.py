"""The optimizer of QAD: AdamW, linear warm-up then linear decay, no weight decay on biases
and LayerNorm parameters (MPCFormer's stage-2 settings; BERT's fine-tuning recipe)."""

from __future__ import annotations

import optax
from flax import traverse_util

#: Parameter names excluded from weight decay: biases, and every LayerNorm / ln_* leaf.
NO_DECAY_NAMES = ("bias",)
NO_DECAY_MODULES = ("LayerNorm", "ln_1", "ln_2", "ln_f", "ln_cross_attn")


def decay_mask(params):
    """A tree of bools: True where weight decay applies (kernels, embedding tables)."""
    flat = traverse_util.flatten_dict(params)
    mask = {
        k: not (k[-1] in NO_DECAY_NAMES or any(part in NO_DECAY_MODULES for part in k))
        for k in flat
    }
    return traverse_util.unflatten_dict(mask)


def warmup_linear_schedule(lr: float, total_steps: int, warmup_fraction: float = 0.1) -> optax.Schedule:
    """0 → ``lr`` linearly over ``warmup_fraction·total_steps`` steps, then linearly to 0."""
    total_steps = max(int(total_steps), 1)
    warmup = max(int(round(warmup_fraction * total_steps)), 1) if warmup_fraction > 0 else 0
    decay = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def is_word_embedding(path: tuple) -> bool:
    """The word-embedding table (BERT ``word_embeddings``, GPT-2 ``wte``)."""
    return path[-2:] in (("word_embeddings", "embedding"), ("wte", "embedding"))


def frozen_labels(params, frozen) -> dict:
    """A tree of ``"frozen"`` / ``"train"`` labels: ``frozen(path)`` says which leaves stay put."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: "frozen" if frozen(k) else "train" for k in flat})


def make_optimizer(
    lr: float,
    total_steps: int,
    *,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    clip_norm: float = 1.0,
    frozen=None,
) -> optax.GradientTransformation:
    """clip_by_global_norm(``clip_norm``) then AdamW(β = 0.9, 0.999; ε = 1e-8) on the
    :func:`warmup_linear_schedule`, weight decay masked by :func:`decay_mask`.
    ``frozen``: a predicate on parameter paths; those leaves get no update (and no decay)."""
    sched = warmup_linear_schedule(lr, total_steps, warmup_fraction)
    parts = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decay_mask))
    opt = optax.chain(*parts)
    if frozen is None:
        return opt
    return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, lambda p: frozen_labels(p, frozen))
