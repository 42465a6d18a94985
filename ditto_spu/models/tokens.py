"""Token ids for a model and some text: the one tokenizer path of ditto-spu.

A model with a tokenizer (MiniLM, a local checkpoint directory) uses it: padded and
truncated to ``seq_len``, with its attention mask. Random-weight configs (``tiny``,
``bert-base``, ``gpt2-base``) have none: their ids are a deterministic hash of the words
(lower-cased words and punctuation marks, ``1 + crc32(word) mod (vocab − 1)``, so id 0 —
usually padding — is never produced). The cost of a secure run does not depend on which
ids they are; the hash only makes runs repeatable.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from .zoo import ModelError, load_tokenizer

_WORD = re.compile(r"\w+|[^\w\s]")


def word_hash_ids(texts, vocab_size: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask), each (len(texts), seq_len) int32, of the word hash above."""
    if vocab_size < 2:
        raise ModelError(f"a word-hash tokenizer needs a vocabulary of at least 2 ids, got {vocab_size}")
    ids = np.zeros((len(texts), seq_len), np.int32)
    mask = np.zeros((len(texts), seq_len), np.int32)
    for i, text in enumerate(texts):
        words = _WORD.findall(text.lower())[:seq_len]
        for j, word in enumerate(words):
            ids[i, j] = 1 + zlib.crc32(word.encode()) % (vocab_size - 1)
        mask[i, : len(words)] = 1
    return ids, mask


def has_tokenizer(model_name: str) -> bool:
    """Whether ``model_name`` (a zoo name or a directory) ships tokenizer files."""
    try:
        load_tokenizer(model_name)
    except (ModelError, OSError, ValueError):
        return False
    return True


def tokenize(model_name: str, model, texts, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask), each (len(texts), seq_len) int32: the model's own tokenizer
    when ``model_name`` has one, else :func:`word_hash_ids`."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    try:
        tok = load_tokenizer(model_name)
    except (ModelError, OSError, ValueError):
        return word_hash_ids(texts, model.config.vocab_size, seq_len)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)
