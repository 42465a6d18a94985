"""The secure-inference forward function of a stock HF Flax model under a mode.

``secure_forward(model, mode)`` returns a pure JAX function

    forward(params, inputs, attention_mask=None, token_type_ids=None) -> output

suitable for ``jax.jit(forward).lower(...)`` (the compiler's input) and for plaintext
evaluation. Its contract:

* ``inputs`` - by default the CLIENT-SIDE ONE-HOT of the token ids, shape
  (batch, seq, vocab), in the mode's low dtype (:func:`one_hot_ids` makes it). The
  secret input of the MPC is then this 0/1 matrix and the word embedding is one matmul
  ``one_hot @ table`` (PUMA's approach): no secret-index gather (SPU's slowest op on
  BERT: FINDINGS.md) and no integer → one-hot comparisons inside MPC. The price is a
  vocab-wide input to share (seq × vocab elements, e.g. 32 × 30522 ≈ 1M), a one-off
  input cost. ``one_hot=False`` takes int ids instead and builds the one-hot inside
  the program (``ids == iota``), which under MPC is vocab comparisons per token.
* ``attention_mask`` - (batch, seq) 0/1 keep-mask (int or float), default all ones.
  Inside, it is converted to the low dtype and becomes the ring-safe additive bias
  ``(1 − m)·MASK_BIAS`` (:data:`ditto_spu.approx.MASK_BIAS`) or, for 2Quad, a
  multiplicative mask: arithmetic only, no select. Passing it already in the low dtype
  avoids an int → float conversion in the program.
* ``token_type_ids`` - BERT only, (batch, seq) ints, default zeros; embedded as
  one-hot(ids) × table like position ids (both are public in the usual deployment).
* ``params`` - the model's HF parameter tree. Pass it through :func:`prepare_params`
  first to give every leaf the dtype it is used in (linear weights and embedding tables
  low, LayerNorm scale/bias high); then no parameter is converted inside the program and
  each enters the MPC directly in its ring.
* output - chosen by ``output``: ``"auto"`` (``logits`` if the model has a head, else
  ``last_hidden_state``), ``"last_hidden_state"``, ``"pooler_output"``, ``"logits"``,
  ``"mean_pooled"`` (masked mean over tokens in the high dtype: the sentence embedding of
  sentence-transformers), or a callable ``(model_output, attention_mask) -> array``.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core.frozen_dict import FrozenDict, freeze
from transformers.models.bert.modeling_flax_bert import FlaxBertPreTrainedModel
from transformers.models.gpt2.modeling_flax_gpt2 import FlaxGPT2PreTrainedModel

from .intercept import ModeInterceptor
from .modes import Mode, load_mode

#: Parameter-tree module names whose parameters stay in the high dtype (LayerNorms).
HIGH_PARAM_MODULES = ("LayerNorm", "ln_1", "ln_2", "ln_f", "ln_cross_attn")

OUTPUTS = ("auto", "last_hidden_state", "pooler_output", "logits", "mean_pooled")


def model_family(model) -> str:
    """``"bert"`` or ``"gpt2"`` for a stock HF Flax model object, else an error."""
    if isinstance(model, FlaxBertPreTrainedModel):
        return "bert"
    if isinstance(model, FlaxGPT2PreTrainedModel):
        return "gpt2"
    raise TypeError(
        f"{type(model).__name__} is not supported: pass a transformers Flax BERT "
        "(FlaxBertModel or a FlaxBertFor* head) or GPT-2 (FlaxGPT2Model / FlaxGPT2LMHeadModel)"
    )


def prepare_params(params, mode: Union[str, Mode]):
    """``params`` with each leaf in the dtype it is used in under ``mode``.

    LayerNorm scales and biases (modules named in :data:`HIGH_PARAM_MODULES`) get the
    high dtype; every other leaf (Dense / Conv1D kernels and biases, embedding tables)
    the low dtype. Same tree structure and container type as ``params``.
    """
    mode = load_mode(mode)
    low, high = mode.dtypes.low_dtype, mode.dtypes.high_dtype
    frozen = isinstance(params, FrozenDict)
    flat = traverse_util.flatten_dict(dict(params) if frozen else params)
    out = {
        path: jnp.asarray(v, high if any(p in HIGH_PARAM_MODULES for p in path) else low)
        for path, v in flat.items()
    }
    tree = traverse_util.unflatten_dict(out)
    return freeze(tree) if frozen else tree


def one_hot_ids(input_ids, vocab_size: int, dtype=np.float16) -> np.ndarray:
    """Client-side one-hot of token ids: (batch, seq) ints → (batch, seq, vocab) 0/1."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, seq), got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")
    out = np.zeros(ids.shape + (vocab_size,), dtype=np.dtype(dtype))
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


def mean_pool(hidden: jax.Array, attention_mask: jax.Array, dtype=jnp.float32) -> jax.Array:
    """sentence-transformers mean pooling: Σ_t h_t·m_t / max(Σ_t m_t, 1e-9), in ``dtype``."""
    h = hidden.astype(dtype)
    m = attention_mask.astype(dtype)[..., None]
    return jnp.sum(h * m, axis=-2) / jnp.maximum(jnp.sum(m, axis=-2), 1e-9)


def _select_output(output, family: str, result, attention_mask, high):
    if callable(output):
        return output(result, attention_mask)
    if output == "auto":
        output = "logits" if "logits" in result else "last_hidden_state"
    if output == "mean_pooled":
        return mean_pool(result["last_hidden_state"], attention_mask, high)
    if output not in result or result[output] is None:
        raise ValueError(f"this {family} model has no output {output!r}; it has {list(result.keys())}")
    return result[output]


def secure_forward(
    model,
    mode: Union[str, Mode],
    *,
    output: Union[str, Callable[[Any, jax.Array], jax.Array]] = "auto",
    one_hot: bool = True,
) -> Callable[..., jax.Array]:
    """``forward(params, inputs, attention_mask=None, token_type_ids=None)`` for ``model``
    (a stock transformers Flax BERT / GPT-2 object) under ``mode`` (a name, a JSON path
    or a :class:`Mode`). See the module docstring for the contract."""
    mode = load_mode(mode)
    family = model_family(model)
    if jnp.dtype(model.dtype) != jnp.float32:
        raise ValueError(
            f"the model was built with dtype={model.dtype}; load it with the default float32 "
            "and let the mode choose precisions"
        )
    if isinstance(output, str) and output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS} or a callable, got {output!r}")
    module = model.module
    vocab = model.config.vocab_size
    high = mode.dtypes.high_dtype

    def forward(params, inputs, attention_mask=None, token_type_ids=None):
        if one_hot:
            if inputs.ndim != 3 or inputs.shape[-1] != vocab:
                raise ValueError(
                    f"inputs must be the one-hot (batch, seq, {vocab}) token matrix "
                    f"(see one_hot_ids), got shape {inputs.shape}"
                )
            ids = jnp.zeros(inputs.shape[:-1], jnp.int32)  # placeholder: never read
            word_one_hot = inputs
        else:
            ids = jnp.asarray(inputs)
            if not jnp.issubdtype(ids.dtype, jnp.integer):
                raise ValueError(f"inputs must be integer token ids, got {ids.dtype}")
            word_one_hot = None
        batch, seq = ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((batch, seq), jnp.int32)
        position_ids = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32)[None, :], (batch, seq))
        if family == "bert":
            if token_type_ids is None:
                token_type_ids = jnp.zeros((batch, seq), jnp.int32)
            args = (ids, attention_mask, token_type_ids, position_ids, None)
        else:
            if token_type_ids is not None:
                raise ValueError("token_type_ids is a BERT input; GPT-2 has none")
            args = (ids, attention_mask, position_ids)

        interceptor = ModeInterceptor(mode, word_one_hot)
        with nn.intercept_methods(interceptor):
            result = module.apply({"params": params}, *args, deterministic=True, return_dict=True)
        if one_hot and interceptor.word_one_hot_uses != 1:
            raise RuntimeError(
                f"the one-hot input was used {interceptor.word_one_hot_uses} times instead of "
                f"once: {type(module).__name__} does not embed words through a table named "
                "word_embeddings / wte"
            )
        return _select_output(output, family, result, attention_mask, high)

    forward.__name__ = f"{type(model).__name__}_{mode.name}".replace("[", "_").replace("]", "_")
    forward.mode = mode  # type: ignore[attr-defined]
    return forward


def example_inputs(model, mode: Union[str, Mode], seq_len: int, batch: int = 1, one_hot: bool = True):
    """Zero-filled (inputs, attention_mask) of the right shapes and dtypes for lowering."""
    mode = load_mode(mode)
    if one_hot:
        inputs = np.zeros((batch, seq_len, model.config.vocab_size), mode.dtypes.low_dtype)
        inputs[..., 0] = 1
    else:
        inputs = np.zeros((batch, seq_len), np.int32)
    return inputs, np.ones((batch, seq_len), np.int32)
