"""Apply a :class:`~ditto_spu.models.modes.Mode` to stock HF Flax BERT / GPT-2 modules.

How: ``flax.linen.intercept_methods`` (a thread-local interceptor stack, flax >= 0.7)
lets :class:`ModeInterceptor` see every ``Module.__call__`` while a model is applied.
For a few module classes it runs a replacement body instead of the library's; every other
call goes through unchanged. No library file and no global function (``jax.nn.softmax``,
``ACT2FN``) is touched, so nothing leaks outside the ``with`` block or to other threads.

The replacement bodies read the module's own parameters and submodules, so parameter
trees stay exactly HF's. They are faithful rewrites of transformers 4.57.6's Flax code
(``modeling_flax_bert.py``, ``modeling_flax_gpt2.py``) and flax 0.10.1's ``Dense`` /
``Embed`` / ``dot_product_attention_weights`` with three kinds of change only:

* dtypes - linear computations in the policy's ``low`` dtype, residual stream /
  LayerNorm / softmax normalisation in ``high`` (:class:`~ditto_spu.models.modes.DtypePolicy`);
* non-linearities - the mode's GeLU and softmax (:mod:`ditto_spu.approx`);
* MPC-friendly forms - embeddings as one-hot × table matmuls (no gather), and the
  attention mask as the ring-safe :data:`~ditto_spu.approx.MASK_BIAS` (no ``finfo.min``).

Why whole-method rewrites for attention / MLP: HF calls ``dot_product_attention_weights``
(which calls ``jax.nn.softmax``) and ``self.activation`` (an ``ACT2FN`` entry fixed at
setup) as plain functions inside module methods; only module methods are interceptable,
and swapping the functions globally would not be scoped or thread-safe.

Intercepted classes and what changes:

============================  =====================================================
nn.Dense, FlaxConv1D          input, kernel, bias cast to ``low``; output ``low``
nn.Embed                      one-hot(ids) × table in ``low``; the word embedding
                              takes the client's one-hot matrix when one is given
nn.LayerNorm                  input cast to ``high``; output ``high``; in mixed-ring
                              modes the two-pass variance (flax's
                              ``use_fast_variance=False``)
FlaxBertLayer, FlaxGPT2Block  residual-stream input cast to ``high`` (so residual
                              adds run in ``high``)
FlaxBertSelfAttention,        Q/K/V via the intercepted projections; scores and
FlaxGPT2Attention             context matmuls in ``low``; mode's softmax (mixed
                              precision when the policy is mixed)
FlaxBertIntermediate,         mode's GeLU in the policy's GeLU dtype
FlaxBertPredictionHeadTransform,
FlaxGPT2MLP
FlaxBertPooler                dense in ``low``, tanh in ``high``
============================  =====================================================

Decoding with a key/value cache runs through an explicit :class:`KVCacheIO` (the cache is
an input and the new keys / values are outputs of the traced function, so each party can
keep its shares of them between steps: :mod:`ditto_spu.models.decoding`). HF's own cache
(``init_cache`` / a ``cache`` collection, a mutable variable updated at a traced index) is
unsupported under a mode and raises :class:`NotImplementedError`. Full-sequence forward
passes (what secure inference runs) are supported for every BERT head and GPT-2.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import combine_masks
from jax import lax, random
from transformers.models.bert import modeling_flax_bert as hf_bert
from transformers.models.gpt2 import modeling_flax_gpt2 as hf_gpt2

from .. import approx
from .modes import Mode

#: Names of the embedding tables that hold token (word) embeddings.
WORD_EMBEDDING_NAMES = ("word_embeddings", "wte")
#: GPT-2's position-embedding table.
POSITION_EMBEDDING_NAME = "wpe"


@dataclasses.dataclass
class KVCacheIO:
    """One GPT-2 forward pass's explicit key/value cache (per layer, in layer order).

    ``past_keys`` / ``past_values``: None (a prompt pass: attention over the tokens of this
    pass only) or one ``[batch, slots, heads, head_dim]`` array per layer; ``past_mask``
    ``[batch, slots]`` (nonzero = the slot holds a token; integers, so that the ring-safe
    mask bias stays an integer product under MPC). Each attention layer attends to its
    past slots and, causally, to this pass's tokens, and appends this pass's keys and
    values (in the low dtype) to ``new_keys`` / ``new_values``: the caller returns them,
    and the holder of the cache writes them into the next free slots.
    """

    past_keys: Optional[Sequence[jax.Array]] = None
    past_values: Optional[Sequence[jax.Array]] = None
    past_mask: Optional[jax.Array] = None
    new_keys: list = dataclasses.field(default_factory=list)
    new_values: list = dataclasses.field(default_factory=list)

    def attend_to(self, m, query, key, value, attention_mask, low):
        """(keys, values, keep-mask) of one attention layer; records this pass's key/value."""
        layer = len(self.new_keys)
        key, value = key.astype(low), value.astype(low)
        self.new_keys.append(key)
        self.new_values.append(value)
        if self.past_keys is None:
            return key, value, _attention_mask(m, query, key, attention_mask)
        if self.past_values is None or self.past_mask is None:
            raise ValueError("a decoding pass needs past_keys, past_values and past_mask together")
        if layer >= len(self.past_keys):
            raise ValueError(f"the cache holds {len(self.past_keys)} layers; the model has more")
        past_k, past_v = self.past_keys[layer].astype(low), self.past_values[layer].astype(low)
        batch, q_len = query.shape[0], query.shape[1]
        slots = past_k.shape[1]
        past = jnp.broadcast_to(self.past_mask.astype(jnp.int32)[:, None, None, :], (batch, 1, q_len, slots))
        current = jnp.broadcast_to(jnp.tril(jnp.ones((q_len, q_len), jnp.int32))[None, None], (batch, 1, q_len, q_len))
        if attention_mask is not None:
            current = current * jnp.asarray(attention_mask, jnp.int32)[:, None, None, :]
        keys = jnp.concatenate([past_k, key], axis=1)
        values = jnp.concatenate([past_v, value], axis=1)
        return keys, values, jnp.concatenate([past, current], axis=-1)


class ModeInterceptor:
    """A flax method interceptor applying ``mode`` (use with ``nn.intercept_methods``).

    ``word_one_hot``: optional (batch, seq, vocab) one-hot matrix used instead of the
    token ids by the word-embedding table (client-side one-hot; see
    :func:`ditto_spu.models.secure_forward`). ``word_one_hot_uses`` counts how often it
    was consumed, so callers can check it really replaced the ids. ``position_one_hot``
    does the same for GPT-2's position table ``wpe`` (a decoding step's position is an
    input, not a constant of the program). ``kv``: explicit key/value cache input and
    output of GPT-2 attention (:class:`KVCacheIO`).
    """

    def __init__(
        self,
        mode: Mode,
        word_one_hot: Optional[jax.Array] = None,
        *,
        position_one_hot: Optional[jax.Array] = None,
        kv: Optional["KVCacheIO"] = None,
    ):
        self.mode = mode
        self.low = mode.dtypes.low_dtype
        self.high = mode.dtypes.high_dtype
        self.gelu_dtype = mode.dtypes.gelu_dtype
        self.word_one_hot = word_one_hot
        self.word_one_hot_uses = 0
        self.position_one_hot = position_one_hot
        self.position_one_hot_uses = 0
        self.kv = kv
        self._softmax = approx.SOFTMAXES[mode.softmax]
        self._gelu = None if mode.gelu == "exact" else approx.GELUS[mode.gelu]

    # ---- dispatch -------------------------------------------------------------------
    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            for cls, handler in _HANDLERS:
                if isinstance(context.module, cls):
                    return handler(self, context.module, next_fun, *args, **kwargs)
        return next_fun(*args, **kwargs)

    # ---- shared pieces --------------------------------------------------------------
    def gelu(self, x: jax.Array, model_activation: Callable) -> jax.Array:
        """The mode's GeLU in the policy's GeLU dtype (``exact``: the model's own)."""
        x = x.astype(self.gelu_dtype)
        with jax.named_scope(f"gelu_{self.mode.gelu}"):
            return model_activation(x) if self._gelu is None else self._gelu(x)

    def attend(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        mask: Optional[jax.Array],
        *,
        layer_head_mask: Optional[jax.Array] = None,
        dropout_rng=None,
        dropout_rate: float = 0.0,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """Scaled dot-product attention, ``[b, q, h, d]`` → (context ``[b, q, h, d]``,
        weights ``[b, h, q, k]``), as flax's ``dot_product_attention_weights`` + HF's
        context einsum, in ``low`` with the mode's softmax. ``mask``: keep-mask
        broadcastable to ``[b, h, q, k]`` (nonzero = attend) or None."""
        low = self.low
        query, key, value = query.astype(low), key.astype(low), value.astype(low)
        # 1/√d as a product by a public constant (flax divides by √d: same value up to
        # one rounding; a product is the cheap, unambiguous op under MPC).
        query = query * jnp.asarray(1.0 / math.sqrt(query.shape[-1]), dtype=low)
        scores = jnp.einsum("...qhd,...khd->...hqk", query, key)
        high = self.high if self.mode.dtypes.mixed else None
        with jax.named_scope(f"softmax_{self.mode.softmax}"):
            weights = self._softmax(scores, mask, axis=-1, high_dtype=high)
        if not deterministic and dropout_rate > 0.0:
            keep_prob = 1.0 - dropout_rate
            shape = (1,) * (key.ndim - 2) + weights.shape[-2:]  # broadcast_dropout=True
            keep = random.bernoulli(dropout_rng, keep_prob, shape)
            weights = weights * (keep.astype(low) / jnp.asarray(keep_prob, dtype=low))
        if layer_head_mask is not None:
            weights = jnp.einsum("...hqk,h->...hqk", weights, layer_head_mask.astype(low))
        context = jnp.einsum("...hqk,...khd->...qhd", weights, value)
        return context, weights


# ---- handlers: (interceptor, module, next_fun, *args, **kwargs) -> output -------------


def _no_cache(module: nn.Module, init_cache: bool) -> None:
    if init_cache or module.has_variable("cache", "cached_key"):
        raise NotImplementedError(
            f"{type(module).__name__}: decoding with a KV cache (init_cache / 'cache' "
            "collection) is not supported under a ditto-spu mode; run the full sequence"
        )


def _dense(ic: ModeInterceptor, m: nn.Dense, next_fun, inputs):
    kernel = m.get_variable("params", "kernel")
    if kernel is None:  # initialisation: let flax create the parameters
        return next_fun(inputs)
    if m.dot_general is not None or m.dot_general_cls is not None:
        raise NotImplementedError(f"{m.name}: nn.Dense with a custom dot_general")
    low = ic.low
    x, k = inputs.astype(low), kernel.astype(low)
    y = lax.dot_general(x, k, (((x.ndim - 1,), (0,)), ((), ())), precision=m.precision)
    if m.use_bias:
        bias = m.get_variable("params", "bias").astype(low)
        y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y


def _conv1d(ic: ModeInterceptor, m: hf_gpt2.FlaxConv1D, next_fun, inputs):
    kernel = m.get_variable("params", "kernel")  # stored (features, in), as PyTorch
    if kernel is None:
        return next_fun(inputs)
    low = ic.low
    x, k = inputs.astype(low), kernel.astype(low).T
    y = lax.dot_general(x, k, (((x.ndim - 1,), (0,)), ((), ())), precision=m.precision)
    if m.use_bias:
        y = y + m.get_variable("params", "bias").astype(low)
    return y


def _embed(ic: ModeInterceptor, m: nn.Embed, next_fun, ids):
    if not m.has_variable("params", "embedding"):
        return next_fun(ids)
    low = ic.low
    table = m.embedding.astype(low)
    if m.name in WORD_EMBEDDING_NAMES and ic.word_one_hot is not None:
        one_hot = _one_hot_input(m, ic.word_one_hot, ids, "token", low)
        ic.word_one_hot_uses += 1
    elif m.name == POSITION_EMBEDDING_NAME and ic.position_one_hot is not None:
        one_hot = _one_hot_input(m, ic.position_one_hot, ids, "position", low)
        ic.position_one_hot_uses += 1
    else:
        one_hot = jax.nn.one_hot(ids, m.num_embeddings, dtype=low)
    with jax.named_scope("embed_one_hot"):
        return lax.dot_general(one_hot, table, (((one_hot.ndim - 1,), (0,)), ((), ())))


def _one_hot_input(m: nn.Embed, one_hot, ids, what: str, low):
    """A one-hot input replacing ``ids`` for table ``m``, checked against its shape."""
    if one_hot.shape[-1] != m.num_embeddings or one_hot.shape[:-1] != ids.shape:
        raise ValueError(
            f"{m.name}: {what} one-hot input of shape {one_hot.shape} does not match "
            f"ids {ids.shape} × {m.num_embeddings} rows"
        )
    return one_hot.astype(low)


def _layer_norm(ic: ModeInterceptor, m: nn.LayerNorm, next_fun, x, *args, **kwargs):
    x = x.astype(ic.high)
    initialising = m.use_scale and m.get_variable("params", "scale") is None
    if not ic.mode.dtypes.mixed or args or kwargs or initialising or not _plain_layer_norm(m):
        return next_fun(x, *args, **kwargs).astype(ic.high)
    # flax's LayerNorm with use_fast_variance=False (the two-pass variance, non-negative by
    # construction): under MPC it needs no clip to 0 (a full-ring comparison) and no
    # separate square of the mean, and it is the more accurate form in fixed point.
    mean = jnp.mean(x, axis=-1, keepdims=True)
    y = x - mean
    var = jnp.mean(y * y, axis=-1, keepdims=True)
    mul = lax.rsqrt(var + m.epsilon)
    if m.use_scale:
        mul = mul * m.get_variable("params", "scale").astype(ic.high)
    y = y * mul
    if m.use_bias:
        y = y + m.get_variable("params", "bias").astype(ic.high)
    return y.astype(ic.high)


def _plain_layer_norm(m: nn.LayerNorm) -> bool:
    """A LayerNorm over the last axis with no cross-device or masked statistics — what
    BERT's and GPT-2's are (the rewrite covers that case only)."""
    return (
        m.reduction_axes in (-1, (-1,))
        and m.feature_axes in (-1, (-1,))
        and m.axis_name is None
        and m.use_fast_variance
    )


def _residual_block(ic: ModeInterceptor, m, next_fun, hidden_states, *args, **kwargs):
    return next_fun(hidden_states.astype(ic.high), *args, **kwargs)


def _attention_mask(m, query, key, attention_mask):
    """The keep-mask HF's BERT and GPT-2 attention build: causal (if the module is) and/or
    padding, broadcast to (batch, heads, q, k); None when there is neither."""
    if m.causal:
        q_len, k_len = query.shape[1], key.shape[1]
        causal = m.causal_mask[:, :, :q_len, :k_len]
        causal = jnp.broadcast_to(causal, (query.shape[0],) + causal.shape[1:])
        if attention_mask is None:
            return causal
        expanded = jnp.broadcast_to(jnp.expand_dims(attention_mask, (-3, -2)), causal.shape)
        return combine_masks(expanded, causal)
    if attention_mask is not None:
        return jnp.expand_dims(attention_mask, axis=(-3, -2))
    return None


def _bert_self_attention(
    ic: ModeInterceptor,
    m: hf_bert.FlaxBertSelfAttention,
    next_fun,
    hidden_states,
    attention_mask,
    layer_head_mask,
    key_value_states=None,
    init_cache: bool = False,
    deterministic=True,
    output_attentions: bool = False,
):
    _no_cache(m, init_cache)
    kv = hidden_states if key_value_states is None else key_value_states
    query = m._split_heads(m.query(hidden_states))
    key = m._split_heads(m.key(kv))
    value = m._split_heads(m.value(kv))

    mask = _attention_mask(m, query, key, attention_mask)

    rate = m.config.attention_probs_dropout_prob
    rng = m.make_rng("dropout") if (not deterministic and rate > 0.0) else None
    context, weights = ic.attend(
        query, key, value, mask,
        layer_head_mask=layer_head_mask, dropout_rng=rng, dropout_rate=rate,
        deterministic=deterministic,
    )
    context = context.reshape(context.shape[:2] + (-1,))
    return (context, weights) if output_attentions else (context,)


def _gpt2_attention(
    ic: ModeInterceptor,
    m: hf_gpt2.FlaxGPT2Attention,
    next_fun,
    hidden_states,
    key_value_states=None,
    attention_mask=None,
    deterministic: bool = True,
    init_cache: bool = False,
    output_attentions: bool = False,
):
    _no_cache(m, init_cache)
    if key_value_states is None:
        query, key, value = jnp.split(m.c_attn(hidden_states), 3, axis=2)
    else:
        query = m.q_attn(hidden_states)
        key, value = jnp.split(m.c_attn(key_value_states), 2, axis=2)
    query, key, value = m._split_heads(query), m._split_heads(key), m._split_heads(value)

    if ic.kv is not None:
        if key_value_states is not None:
            raise NotImplementedError(f"{m.name}: a key/value cache for cross-attention")
        key, value, mask = ic.kv.attend_to(m, query, key, value, attention_mask, ic.low)
    else:
        mask = _attention_mask(m, query, key, attention_mask)

    rate = m.config.attn_pdrop
    rng = m.make_rng("dropout") if (not deterministic and rate > 0.0) else None
    context, weights = ic.attend(
        query, key, value, mask, dropout_rng=rng, dropout_rate=rate, deterministic=deterministic
    )
    out = m.c_proj(m._merge_heads(context))
    out = m.resid_dropout(out, deterministic=deterministic)
    return (out, weights) if output_attentions else (out,)


def _bert_intermediate(ic: ModeInterceptor, m, next_fun, hidden_states):
    return ic.gelu(m.dense(hidden_states), m.activation)


def _bert_head_transform(ic: ModeInterceptor, m, next_fun, hidden_states):
    return m.LayerNorm(ic.gelu(m.dense(hidden_states), m.activation))


def _gpt2_mlp(ic: ModeInterceptor, m: hf_gpt2.FlaxGPT2MLP, next_fun, hidden_states, deterministic=True):
    h = ic.gelu(m.c_fc(hidden_states), m.act)
    h = m.c_proj(h)
    return m.dropout(h, deterministic=deterministic)


def _bert_pooler(ic: ModeInterceptor, m, next_fun, hidden_states):
    cls = m.dense(hidden_states[:, 0])
    return jnp.tanh(cls.astype(ic.high))


# Most specific first: the first isinstance match wins.
_HANDLERS: tuple[tuple[type, Callable[..., Any]], ...] = (
    (hf_bert.FlaxBertSelfAttention, _bert_self_attention),
    (hf_gpt2.FlaxGPT2Attention, _gpt2_attention),
    (hf_bert.FlaxBertIntermediate, _bert_intermediate),
    (hf_bert.FlaxBertPredictionHeadTransform, _bert_head_transform),
    (hf_gpt2.FlaxGPT2MLP, _gpt2_mlp),
    (hf_bert.FlaxBertPooler, _bert_pooler),
    (hf_bert.FlaxBertLayer, _residual_block),
    (hf_gpt2.FlaxGPT2Block, _residual_block),
    (hf_gpt2.FlaxConv1D, _conv1d),
    (nn.Dense, _dense),
    (nn.Embed, _embed),
    (nn.LayerNorm, _layer_norm),
)
