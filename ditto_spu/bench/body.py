"""The transformer body under a mode: a secure forward that starts after the embeddings.

Paper-comparable baselines (PUMA's, Ditto's, FINDINGS.md's whole-encoder table) measure
the transformer layers from the embedding output on: the word embedding is a
seq × vocab one-hot matmul that SPU's ring GEMM makes very slow and that is the same in
every mode. :func:`body_forward` is that part of a stock HF Flax BERT / GPT-2 model
under a mode, built from the model's own submodules and the same
:class:`~ditto_spu.models.ModeInterceptor` that :func:`~ditto_spu.models.secure_forward`
uses, so every op is exactly what the full secure forward would run for those layers:

* BERT: ``encoder`` (all layers; no pooler), input = the embedding output (after the
  embeddings' LayerNorm, so in the mode's high dtype);
* GPT-2: ``h`` (all blocks) then ``ln_f`` (no LM head), input = ``wte + wpe`` (in the
  mode's low dtype).

:func:`embedding_forward` computes that input in plaintext from token ids, so a body
benchmark runs on the values (and dtype) the full model would feed it.

The attention mask: none (every position is a real token, as in the paper's benchmarks);
GPT-2 keeps its causal mask, a public constant.
"""

from __future__ import annotations

from typing import Callable, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..models import Mode, ModeInterceptor, load_mode, model_family

#: Top-level parameter subtrees the body reads, per family.
BODY_PARAMS = {"bert": ("encoder",), "gpt2": ("h", "ln_f")}
#: Top-level parameter subtrees the embedding reads, per family.
EMBEDDING_PARAMS = {"bert": ("embeddings",), "gpt2": ("wte", "wpe")}


def _module_and_params_root(model):
    """(flax module whose submodules are embeddings / encoder or wte / h, params subtree)."""
    family = model_family(model)
    params = model.params
    # Head models wrap the base module: FlaxBertFor* -> .bert, FlaxGPT2LMHeadModel -> .transformer
    for attr in ("bert", "transformer"):
        if attr in params and not any(k in params for k in BODY_PARAMS[family]):
            return family, attr, params[attr]
    return family, None, params


def body_params(model, params=None) -> dict:
    """The subtree of ``params`` (default: the model's) that :func:`body_forward` takes."""
    family, wrapper, root = _module_and_params_root(model)
    if params is not None:
        root = params[wrapper] if wrapper else params
    return {k: root[k] for k in BODY_PARAMS[family]}


def embedding_params(model, params=None) -> dict:
    """The subtree of ``params`` that :func:`embedding_forward` takes."""
    family, wrapper, root = _module_and_params_root(model)
    if params is not None:
        root = params[wrapper] if wrapper else params
    return {k: root[k] for k in EMBEDDING_PARAMS[family]}


def _base_apply(model, wrapper, params, fn, *args):
    """Apply ``fn(base_module, *args)`` with ``params`` (a base-module subtree)."""
    module = model.module
    if wrapper is None:
        return module.apply({"params": params}, *args, method=fn)
    return module.apply(
        {"params": {wrapper: params}}, *args, method=lambda m, *a: fn(getattr(m, wrapper), *a)
    )


def body_forward(model, mode: Union[str, Mode]) -> Callable[[dict, jax.Array], jax.Array]:
    """``forward(params, hidden) -> last hidden state`` of ``model``'s transformer body
    under ``mode``. ``params``: :func:`body_params` of the mode's prepared parameters
    (:func:`~ditto_spu.models.prepare_params`); ``hidden``: (batch, seq, hidden) embedding
    output, as :func:`embedding_forward` gives it. See the module docstring."""
    mode = load_mode(mode)
    family, wrapper, _ = _module_and_params_root(model)

    def bert_body(m, h):
        return m.encoder(h, None, head_mask=None, deterministic=True, return_dict=True)[0]

    def gpt2_body(m, h):
        out = m.h(h, None, None, None, deterministic=True, return_dict=True)[0]
        return m.ln_f(out)

    body = bert_body if family == "bert" else gpt2_body

    def forward(params, hidden):
        with nn.intercept_methods(ModeInterceptor(mode)):
            return _base_apply(model, wrapper, params, body, hidden)

    forward.__name__ = f"{type(model).__name__}_body_{mode.name}".replace("[", "_").replace("]", "_")
    forward.mode = mode  # type: ignore[attr-defined]
    return forward


def embedding_forward(model, mode: Union[str, Mode]) -> Callable[[dict, jax.Array], jax.Array]:
    """``embed(params, input_ids) -> hidden``: the embedding stage of ``model`` under
    ``mode`` (plaintext helper: the input :func:`body_forward` would receive from the
    full secure forward, with its dtype). ``params``: :func:`embedding_params`."""
    mode = load_mode(mode)
    family, wrapper, _ = _module_and_params_root(model)

    def bert_embed(m, ids):
        batch, seq = ids.shape
        pos = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32)[None], (batch, seq))
        types = jnp.zeros((batch, seq), jnp.int32)
        return m.embeddings(ids, types, pos, None, deterministic=True)

    def gpt2_embed(m, ids):
        batch, seq = ids.shape
        pos = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32)[None], (batch, seq))
        return m.wte(ids) + m.wpe(pos)

    embed = bert_embed if family == "bert" else gpt2_embed

    def forward(params, input_ids):
        with nn.intercept_methods(ModeInterceptor(mode)):
            return _base_apply(model, wrapper, params, embed, jnp.asarray(input_ids, jnp.int32))

    return forward
