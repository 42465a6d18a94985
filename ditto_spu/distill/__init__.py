"""Quantization-aware distillation (QAD): keep a model's utility under Ditto's rings.

Typical use::

    from ditto_spu.models import load_model, load_tokenizer
    from ditto_spu.data import builtin_corpus
    from ditto_spu.distill import Batches, DistillConfig, Distiller, encode_texts, save_student

    model, tok = load_model("minilm"), load_tokenizer("minilm")
    corpus = builtin_corpus()
    train = Batches.from_encoded(encode_texts(tok, corpus.train, 64))
    run = Distiller(model, DistillConfig(mode="ditto", stage1_steps=150, stage2_steps=150), train)
    result = run.run("runs/minilm", time_budget_s=18 * 60)   # resumable
    save_student(model, result.params, "runs/minilm/student", tok)

Pieces: :mod:`.student` (teacher / student forwards with hidden states and attention maps;
the backend hook ``fast`` / ``emulator`` / ``plaintext``), :mod:`.fakequant` (the fast
jit-native ring model used for training, with the FXP32 range penalty that keeps the
student inside its policy), :mod:`.losses`, :mod:`.optim` (AdamW, warm-up, no decay on
bias / LayerNorm, optional frozen leaves), :mod:`.checkpoint`, :mod:`.trainer` (the loop).
"""

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .fakequant import RangeTaps, fake_quant
from .losses import attention_loss, embedding_loss, hidden_state_loss, soft_cross_entropy
from .optim import decay_mask, make_optimizer, warmup_linear_schedule
from .student import (
    BACKENDS,
    HashTokenizer,
    Taps,
    VocabSubset,
    encode_texts,
    student_forward,
    tapped_forward,
    teacher_forward,
    tokenizer_for,
)
from .trainer import Batches, DistillConfig, Distiller, DistillResult, save_student, summarize

__all__ = [
    "BACKENDS",
    "RangeTaps",
    "Batches",
    "CheckpointError",
    "DistillConfig",
    "DistillResult",
    "Distiller",
    "HashTokenizer",
    "Taps",
    "VocabSubset",
    "attention_loss",
    "decay_mask",
    "embedding_loss",
    "encode_texts",
    "fake_quant",
    "hidden_state_loss",
    "load_checkpoint",
    "make_optimizer",
    "read_checkpoint_meta",
    "save_checkpoint",
    "save_student",
    "soft_cross_entropy",
    "student_forward",
    "summarize",
    "tapped_forward",
    "teacher_forward",
    "tokenizer_for",
    "warmup_linear_schedule",
]
