"""Modes (approximations × dtype policy) applied to stock HF Flax BERT / GPT-2 models.

Typical use::

    from ditto_spu.models import load_model, load_mode, secure_forward, prepare_params, one_hot_ids
    model = load_model("minilm")                       # or FlaxBertModel.from_pretrained(path)
    mode = load_mode("ditto")
    fwd = secure_forward(model, mode, output="mean_pooled")
    params = prepare_params(model.params, mode)
    x = one_hot_ids(input_ids, model.config.vocab_size, mode.dtypes.low_dtype)
    emb = jax.jit(fwd)(params, x, attention_mask)
    stablehlo = jax.jit(fwd).lower(params, x, attention_mask).as_text()
"""

from .forward import (
    HIGH_PARAM_MODULES,
    example_inputs,
    mean_pool,
    model_family,
    one_hot_ids,
    prepare_params,
    secure_forward,
)
from .intercept import ModeInterceptor
from .modes import Approximations, DtypePolicy, Mode, ModeError, available_modes, load_mode
from .zoo import MINILM_PIP, MODEL_NAMES, ModelError, load_model, load_tokenizer, minilm_dir

__all__ = [
    "Approximations",
    "DtypePolicy",
    "HIGH_PARAM_MODULES",
    "MINILM_PIP",
    "MODEL_NAMES",
    "Mode",
    "ModeError",
    "ModeInterceptor",
    "ModelError",
    "available_modes",
    "example_inputs",
    "load_mode",
    "load_model",
    "load_tokenizer",
    "mean_pool",
    "minilm_dir",
    "model_family",
    "one_hot_ids",
    "prepare_params",
    "secure_forward",
]
