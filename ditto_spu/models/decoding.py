"""GPT-2 text generation under a mode: a prompt pass and a decoding step with an explicit
key/value cache, as pure JAX functions the compiler takes.

Two functions of the same stock HF Flax GPT-2 LM model (``FlaxGPT2LMHeadModel``):

``prompt(params, word_one_hot, attention_mask, last_selector) -> (logits, keys, values)``
    the prompt of P tokens (padded on the right to P; ``attention_mask`` (1, P) 0/1 marks
    the real ones) in one pass. ``last_selector`` (1, P) is the one-hot of the last real
    position: the LM head runs on that row only (a P-fold smaller head matmul than on
    every position, and nothing but the next-token logits reaches the client).
    ``keys`` / ``values``: one ``(1, P, heads, head_dim)`` array per layer;

``step(params, word_one_hot, position_one_hot, past_mask, past_keys, past_values) -> (logits, keys, values)``
    one new token against a cache of C slots: ``word_one_hot`` (1, 1, vocab) and
    ``position_one_hot`` (1, 1, n_positions) — inputs, so one compiled step serves every
    position; ``past_mask`` (1, C) int 0/1 marks the filled slots; ``past_keys`` /
    ``past_values`` one ``(1, C, heads, head_dim)`` array per layer. Returns the new
    token's logits (1, vocab) and its keys / values (1, 1, heads, head_dim) per layer.

Both run the model's own modules under the mode's interceptor
(:class:`~ditto_spu.models.intercept.ModeInterceptor`, with a
:class:`~ditto_spu.models.intercept.KVCacheIO`), so the approximations and the dtype policy
are exactly those of the full-sequence forward. The LM head is GPT-2's tied one, logits =
h · wteᵀ, as ``FlaxGPT2LMHeadModule`` computes it, in the low dtype.
"""

from __future__ import annotations

from typing import Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from transformers import FlaxGPT2LMHeadModel

from .intercept import KVCacheIO, ModeInterceptor
from .modes import Mode, load_mode


def _check_model(model) -> None:
    if not isinstance(model, FlaxGPT2LMHeadModel):
        raise TypeError(
            f"generation needs a GPT-2 language model (FlaxGPT2LMHeadModel), got {type(model).__name__}"
        )
    if not model.config.tie_word_embeddings:
        raise NotImplementedError("GPT-2 with an untied LM head: the decoding functions use the tied head")
    if jnp.dtype(model.dtype) != jnp.float32:
        raise ValueError(f"the model was built with dtype={model.dtype}; load it in float32 and let the mode choose")


def cache_shape(model, slots: int) -> tuple:
    """Shape of one layer's key (or value) cache of ``slots`` slots, batch 1."""
    cfg = model.config
    return (1, slots, cfg.n_head, cfg.n_embd // cfg.n_head)


def _run_transformer(model, mode: Mode, params, word_one_hot, attention_mask, position_one_hot, kv):
    """The transformer body under the mode with the explicit cache: last hidden states."""
    batch, seq = word_one_hot.shape[:2]
    ids = jnp.zeros((batch, seq), jnp.int32)  # placeholders: the one-hot inputs are read instead
    positions = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32)[None], (batch, seq))
    interceptor = ModeInterceptor(mode, word_one_hot, position_one_hot=position_one_hot, kv=kv)
    with nn.intercept_methods(interceptor):
        out = model.module.apply(
            {"params": params}, ids, attention_mask, positions, deterministic=True, return_dict=True,
            method=lambda module, *a, **k: module.transformer(*a, **k),
        )
    if interceptor.word_one_hot_uses != 1:
        raise RuntimeError(f"the token one-hot was used {interceptor.word_one_hot_uses} times instead of once")
    if position_one_hot is not None and interceptor.position_one_hot_uses != 1:
        raise RuntimeError(f"the position one-hot was used {interceptor.position_one_hot_uses} times instead of once")
    if len(kv.new_keys) != model.config.n_layer:
        raise RuntimeError(f"{len(kv.new_keys)} attention layers recorded keys; the model has {model.config.n_layer}")
    return out.last_hidden_state


def _lm_head(params, hidden, low):
    """GPT-2's tied LM head on ``hidden`` (batch, d): logits (batch, vocab) in ``low``.

    Computed as (table · hiddenᵀ)ᵀ: the same products, but SPU runs a matrix product with
    the (vocab, d) table as its left operand in seconds, and the contraction of the table's
    second axis (``einsum('bd,vd->bv')``) in minutes (GPT-2's 50257 × 768 table, FM64:
    153 s against 4.6 s measured here)."""
    table = params["transformer"]["wte"]["embedding"].astype(low)
    return (table @ hidden.astype(low).T).T


def prompt_function(model, mode: Union[str, Mode]):
    """``prompt(params, word_one_hot, attention_mask, last_selector)``: see the module docstring."""
    mode = load_mode(mode)
    _check_model(model)
    low = mode.dtypes.low_dtype

    def prompt(params, word_one_hot, attention_mask, last_selector):
        kv = KVCacheIO()
        hidden = _run_transformer(model, mode, params, word_one_hot, attention_mask, None, kv)
        with_last = jnp.einsum("bp,bpd->bd", last_selector.astype(low), hidden.astype(low))
        return _lm_head(params, with_last, low), tuple(kv.new_keys), tuple(kv.new_values)

    prompt.__name__ = f"gpt2_prompt_{mode.name}".replace("-", "_")
    return prompt


def step_function(model, mode: Union[str, Mode]):
    """``step(params, word_one_hot, position_one_hot, past_mask, past_keys, past_values)``:
    see the module docstring."""
    mode = load_mode(mode)
    _check_model(model)
    low = mode.dtypes.low_dtype

    def step(params, word_one_hot, position_one_hot, past_mask, past_keys, past_values):
        kv = KVCacheIO(past_keys=past_keys, past_values=past_values, past_mask=past_mask)
        ones = jnp.ones(word_one_hot.shape[:2], jnp.int32)
        if word_one_hot.shape[1] != 1:
            raise ValueError(f"a decoding step takes one token, got {word_one_hot.shape[1]}")
        hidden = _run_transformer(model, mode, params, word_one_hot, ones, position_one_hot, kv)
        hidden = hidden.reshape(hidden.shape[0], hidden.shape[-1])  # the one token's row
        return _lm_head(params, hidden, low), tuple(kv.new_keys), tuple(kv.new_values)

    step.__name__ = f"gpt2_step_{mode.name}".replace("-", "_")
    return step


def prompt_inputs(model, mode: Union[str, Mode], ids, slots: int):
    """(word_one_hot, attention_mask, last_selector) of prompt ids padded to ``slots``."""
    mode = load_mode(mode)
    low = np.dtype(mode.dtypes.low_dtype)
    ids = [int(i) for i in ids]
    if not 1 <= len(ids) <= slots:
        raise ValueError(f"a prompt of {len(ids)} tokens does not fit {slots} slots")
    vocab = model.config.vocab_size
    word = np.zeros((1, slots, vocab), low)
    word[0, np.arange(len(ids)), ids] = 1
    mask = np.zeros((1, slots), np.int32)
    mask[0, : len(ids)] = 1
    selector = np.zeros((1, slots), low)
    selector[0, len(ids) - 1] = 1
    return word, mask, selector


def step_inputs(model, mode: Union[str, Mode], token: int, position: int, filled: int, slots: int):
    """(word_one_hot, position_one_hot, past_mask) of one decoding step: ``token`` at
    ``position`` against a cache of ``slots`` slots whose first ``filled`` are in use."""
    mode = load_mode(mode)
    low = np.dtype(mode.dtypes.low_dtype)
    cfg = model.config
    if not 0 <= position < cfg.n_positions:
        raise ValueError(f"position {position} is outside the model's {cfg.n_positions} positions")
    if not 0 <= filled <= slots:
        raise ValueError(f"{filled} filled slots do not fit a cache of {slots}")
    word = np.zeros((1, 1, cfg.vocab_size), low)
    word[0, 0, int(token)] = 1
    pos = np.zeros((1, 1, cfg.n_positions), low)
    pos[0, 0, position] = 1
    past_mask = np.zeros((1, slots), np.int32)
    past_mask[0, :filled] = 1
    return word, pos, past_mask
