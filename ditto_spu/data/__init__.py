"""Datasets in their real formats: GLUE TSVs, WikiText-103 raw, unlabeled text.

* :mod:`.glue` - :func:`load_glue` (RTE, CoLA, QQP, QNLI, SST-2), :func:`encode_examples`;
* :mod:`.wikitext` - :func:`read_wikitext`, :func:`wikitext_text`, :func:`perplexity_windows`;
* :mod:`.text` - :func:`read_text` (any UTF-8 file), :func:`builtin_corpus`
  (``pydoc_data.topics``, deterministic train / held-out split by topic),
  :func:`docstring_sentences` (prose of the standard library's docstrings: more training text),
  :func:`calibration_sentences` (N sentences spread over the documentation).

Every malformed input raises an error (a :class:`~ditto_spu.errors.DittoError`) that names
the file and line.
"""

from .glue import (
    SPLITS,
    TASKS,
    GlueExample,
    GlueFormatError,
    GlueTask,
    encode_examples,
    glue_file,
    glue_task,
    load_glue,
    read_glue_tsv,
)
from .text import (
    Corpus,
    TextDataError,
    builtin_corpus,
    calibration_sentences,
    docstring_sentences,
    random_windows,
    read_text,
    split_sentences,
    train_held_out_split,
)
from .wikitext import (
    WikiArticle,
    WikitextFormatError,
    detokenize,
    perplexity_windows,
    read_wikitext,
    wikitext_file,
    wikitext_text,
)

__all__ = [
    "SPLITS",
    "TASKS",
    "Corpus",
    "random_windows",
    "GlueExample",
    "GlueFormatError",
    "GlueTask",
    "TextDataError",
    "WikiArticle",
    "WikitextFormatError",
    "builtin_corpus",
    "calibration_sentences",
    "docstring_sentences",
    "detokenize",
    "encode_examples",
    "glue_file",
    "glue_task",
    "load_glue",
    "perplexity_windows",
    "read_glue_tsv",
    "read_text",
    "read_wikitext",
    "split_sentences",
    "train_held_out_split",
    "wikitext_file",
    "wikitext_text",
]
