"""Teacher and student forward functions with the intermediates distillation needs.

``tapped_forward(model, mode, output)`` wraps :func:`ditto_spu.models.secure_forward` and
returns ``f(params, input_ids, attention_mask, token_type_ids=None) -> Taps`` where
:class:`Taps` holds the model output, the hidden states (input of the first layer, then
the output of every layer: L+1 arrays ``(b, s, d)``) and the attention probabilities
of every layer (``(b, h, s, s)``, after the mode's softmax). They are collected by a flax
method interceptor stacked with the mode's (on ``FlaxBertLayer`` / ``FlaxBertAttention``
/ ``FlaxGPT2Block``, which the mode forwards unchanged), so the forward IS the secure one.

The student is ``student_forward(model, mode, policy, backend)``: the same function on
float32 master parameters, cast by :func:`~ditto_spu.models.prepare_params` inside and
evaluated by a backend — THE hook choosing what the training differentiates:

* ``"fast"`` (default): :func:`ditto_spu.distill.fakequant.fake_quant`, jit-native
  float32 model of the rings (matches the emulator to ~1 ulp of FXP32 on the tiny BERT);
* ``"emulator"``: :func:`ditto_spu.quant.emulate`, the bit-level reference (float64, host
  callbacks; tens of seconds per MiniLM step);
* ``"plaintext"``: the mode's forward in JAX dtypes (float16 / float32), no rings.

Evaluation (``ditto-spu eval``) uses the reference emulator.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import struct, traverse_util
from transformers.models.bert import modeling_flax_bert as hf_bert
from transformers.models.gpt2 import modeling_flax_gpt2 as hf_gpt2

from ..models import load_mode, prepare_params, secure_forward
from .optim import is_word_embedding

BACKENDS = ("fast", "emulator", "plaintext")


@struct.dataclass
class Taps:
    """What a tapped forward returns (a pytree): ``output`` (the selected model output),
    ``hidden`` (tuple of L+1 hidden states), ``attn`` (tuple of L attention maps)."""

    output: Any
    hidden: tuple = ()
    attn: tuple = ()


class _TapInterceptor:
    """Records layer inputs / outputs and attention probabilities while a model runs."""

    def __init__(self, attentions: bool):
        self.attentions = attentions
        self.hidden: list = []
        self.attn: list = []

    def _with_attention(self, next_fun, args, kwargs):
        if not self.attentions:
            return next_fun(*args, **kwargs)
        if "output_attentions" not in kwargs:
            raise RuntimeError(
                "cannot tap attention maps: the model calls its attention without the "
                "output_attentions keyword (unsupported transformers version?)"
            )
        out = next_fun(*args, **{**kwargs, "output_attentions": True})
        self.attn.append(out[1].astype(jnp.float32))
        return tuple(out[:1])

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        m = context.module
        if isinstance(m, hf_bert.FlaxBertAttention) and m.name == "attention":
            return self._with_attention(next_fun, args, kwargs)
        if isinstance(m, (hf_bert.FlaxBertLayer, hf_gpt2.FlaxGPT2Block)):
            if not self.hidden:
                self.hidden.append(args[0].astype(jnp.float32))
            if isinstance(m, hf_gpt2.FlaxGPT2Block):
                out = self._with_attention(next_fun, args, kwargs)
            else:
                out = next_fun(*args, **kwargs)
            self.hidden.append(out[0].astype(jnp.float32))
            return out
        return next_fun(*args, **kwargs)


def tapped_forward(model, mode, output="auto", *, attentions: bool = True) -> Callable[..., Taps]:
    """``f(params, input_ids, attention_mask, token_type_ids=None) -> Taps`` (token ids in,
    one-hot built inside; see the module docstring)."""
    fwd = secure_forward(model, mode, output=output, one_hot=False)

    def f(params, input_ids, attention_mask, token_type_ids=None):
        tap = _TapInterceptor(attentions)
        with nn.intercept_methods(tap):
            out = fwd(params, input_ids, attention_mask, token_type_ids)
        return Taps(out, tuple(tap.hidden), tuple(tap.attn))

    f.mode = fwd.mode  # type: ignore[attr-defined]
    return f


def teacher_forward(model, output="auto", *, attentions: bool = True) -> Callable[..., Taps]:
    """The FP32 teacher: mode ``exact`` (stock non-linearities, all float32)."""
    return tapped_forward(model, "exact", output, attentions=attentions)


def student_forward(
    model,
    mode,
    policy=None,
    *,
    backend: str = "fast",
    output="auto",
    attentions: bool = True,
    ranges: bool = False,
    margin_bits: float = 1.0,
):
    """The QAD student ``f(params_f32, input_ids, attention_mask, token_type_ids=None) -> Taps``:
    the model under ``mode``, its parameters cast by ``prepare_params`` inside, evaluated
    by ``backend`` with the rings of ``policy`` (module docstring). ``ranges`` (fast backend
    only): return ``(Taps, RangeTaps)`` with the FXP32 range penalty at ``margin_bits``
    (:func:`~.fakequant.fake_quant`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if ranges and backend != "fast":
        raise ValueError(f"range taps come from the fast backend, not {backend!r}")
    mode = load_mode(mode)
    inner = tapped_forward(model, mode, output, attentions=attentions)

    if backend == "plaintext":
        return _OnMasterParams(inner, mode)
    # The parameters enter the rings as the secure run's inputs do: cast to the mode's
    # dtypes first (float16 values), then encoded with each argument's own fraction bits
    # (the policy's per-argument overrides). Casting inside the ring function instead
    # would encode every weight in the ring of a top-level cast (the policy's base FXP32),
    # and train a student for weights the secure run never sees.
    if backend == "fast":
        from .fakequant import fake_quant

        return _OnMasterParams(fake_quant(inner, policy, ranges=ranges, margin_bits=margin_bits), mode)
    from ..quant import emulate

    return _OnMasterParams(emulate(inner, policy), mode)


class _OnMasterParams:
    """``ring_fn`` called on float32 master parameters cast by ``prepare_params`` first;
    ``evaluate`` / ``report`` / ``reset_report`` of an emulated ``ring_fn`` pass through."""

    def __init__(self, ring_fn, mode):
        self.ring_fn, self.mode = ring_fn, mode

    def __call__(self, params, input_ids, attention_mask, token_type_ids=None):
        return self.ring_fn(prepare_params(params, self.mode), input_ids, attention_mask, token_type_ids)

    def __getattr__(self, name):
        attr = getattr(self.ring_fn, name)  # AttributeError for what ring_fn lacks
        if name == "evaluate":
            return lambda params, *args: attr(prepare_params(params, self.mode), *args)
        return attr


# ---- vocabulary restriction ---------------------------------------------------------------


@dataclasses.dataclass
class VocabSubset:
    """The rows of the word-embedding table a corpus uses.

    The secure forward embeds words as one-hot × table, so a token only ever reads its own
    row: evaluating the model on a table restricted to the rows in use, with token ids
    renumbered, gives exactly the same values (each one-hot row still has a single 1), at a
    fraction of the cost (MiniLM: 30522 rows; the built-in corpus uses ~5k). Only for
    models whose output does not depend on the whole table (no tied LM head): BERT
    encoders and classifiers.
    """

    token_ids: np.ndarray  # (k,) original ids, sorted
    remap: np.ndarray  # (vocab,) original id -> new id (-1 if unused)

    @classmethod
    def from_ids(cls, ids_arrays, vocab_size: int, always=(0, 100, 101, 102, 103)) -> "VocabSubset":
        used = np.unique(np.concatenate([np.asarray(a).reshape(-1) for a in ids_arrays] + [np.asarray(always)]))
        used = used[(used >= 0) & (used < vocab_size)]
        remap = np.full(vocab_size, -1, np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        return cls(used.astype(np.int32), remap)

    @property
    def size(self) -> int:
        return len(self.token_ids)

    def encode(self, input_ids) -> np.ndarray:
        out = self.remap[np.asarray(input_ids)]
        if (out < 0).any():
            raise ValueError("token ids outside the vocabulary subset")
        return out

    def restrict_model(self, model):
        """A model object of the same class whose config has ``vocab_size = k`` (no params)."""
        config = model.config.__class__(**{**model.config.to_dict(), "vocab_size": self.size})
        return type(model)(config, _do_init=False)

    def restrict_params(self, params):
        flat = traverse_util.flatten_dict(params)
        key = _word_table_key(flat)
        flat[key] = jnp.asarray(flat[key])[self.token_ids]
        return traverse_util.unflatten_dict(flat)

    def expand_params(self, small, full):
        """``full`` with the word-table rows in use replaced by ``small``'s."""
        flat_s = traverse_util.flatten_dict(small)
        flat_f = dict(traverse_util.flatten_dict(full))
        for k, v in flat_s.items():
            if is_word_embedding(k):
                flat_f[k] = jnp.asarray(flat_f[k]).at[self.token_ids].set(v)
            else:
                flat_f[k] = v
        return traverse_util.unflatten_dict(flat_f)


def _word_table_key(flat):
    for k in flat:
        if is_word_embedding(k):
            return k
    raise KeyError("no word-embedding table (word_embeddings / wte) in the parameters")


# ---- tokenizers ---------------------------------------------------------------------------


class HashTokenizer:
    """A stand-in tokenizer for random-weight models without a vocabulary (``tiny``):
    lower-cased words → ``2 + crc32(word) % (vocab − 3)``, ``[CLS]`` = 1 first, ``[SEP]`` =
    vocab − 1 last, 0 = padding. Deterministic; enough to give a tiny model real text."""

    def __init__(self, vocab_size: int):
        if vocab_size < 8:
            raise ValueError("vocab_size must be at least 8")
        self.vocab_size = vocab_size

    def __call__(self, texts, texts_b=None, *, max_length: int, **_ignored) -> dict:
        n = len(texts)
        ids = np.zeros((n, max_length), np.int32)
        tt = np.zeros((n, max_length), np.int32)
        for i in range(n):
            words = [1] + [self._word(w) for w in texts[i].lower().split()]
            seg = [0] * len(words)
            if texts_b is not None:
                b = [self.vocab_size - 1] + [self._word(w) for w in texts_b[i].lower().split()]
                words, seg = words + b, seg + [1] * len(b)
            words = words[: max_length - 1] + [self.vocab_size - 1]
            seg = seg[: max_length - 1] + [seg[min(len(seg), max_length - 1) - 1]]
            ids[i, : len(words)] = words
            tt[i, : len(words)] = seg
        mask = (ids != 0).astype(np.int32)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}

    def _word(self, w: str) -> int:
        return 2 + zlib.crc32(w.encode("utf-8")) % (self.vocab_size - 3)


def tokenizer_for(teacher: str, model):
    """The teacher's own tokenizer (``minilm`` / a model directory with tokenizer files), else
    a :class:`HashTokenizer` over the model's vocabulary."""
    from ..models import ModelError, load_tokenizer

    try:
        return load_tokenizer(teacher)
    except (ModelError, OSError, ValueError):
        return HashTokenizer(model.config.vocab_size)


def encode_texts(tokenizer, texts, seq_len: int, texts_b=None) -> dict:
    """Token ids / masks (int32, ``(n, seq_len)``) of ``texts`` (and pairs ``texts_b``)."""
    if len(texts) == 0:
        empty = np.zeros((0, seq_len), np.int32)
        return {"input_ids": empty, "attention_mask": empty.copy(), "token_type_ids": empty.copy()}
    if isinstance(tokenizer, HashTokenizer):
        return tokenizer(list(texts), None if texts_b is None else list(texts_b), max_length=seq_len)
    args = (list(texts),) if texts_b is None else (list(texts), list(texts_b))
    enc = tokenizer(*args, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    out = {k: np.asarray(enc[k], np.int32) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    out.setdefault("token_type_ids", np.zeros_like(out["input_ids"]))
    return out
