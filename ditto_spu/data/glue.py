"""GLUE task TSV files (RTE, CoLA, QQP, QNLI, SST-2) in the layout of the official release.

Each task directory holds ``train.tsv``, ``dev.tsv`` and ``test.tsv`` as distributed by
GLUE (``glue_data/<TASK>/``). Cells are separated by tabs and never quoted (a ``"`` is an
ordinary character, as GLUE's own readers treat it). Column layouts:

=======  ======================================================  ===============================
task     train.tsv / dev.tsv                                     test.tsv (header, no labels)
=======  ======================================================  ===============================
RTE      header ``index sentence1 sentence2 label``              ``index sentence1 sentence2``
         label ``entailment`` / ``not_entailment``
CoLA     NO header; ``source label original_mark sentence``      ``index sentence``
         label ``0`` / ``1``
QQP      header ``id qid1 qid2 question1 question2               ``id question1 question2``
         is_duplicate``, label ``0`` / ``1``
QNLI     header ``index question sentence label``                ``index question sentence``
         label ``entailment`` / ``not_entailment``
SST-2    header ``sentence label``, label ``0`` / ``1``          ``index sentence``
=======  ======================================================  ===============================

Label ids follow the order of :attr:`GlueTask.labels` (``entailment`` = 0 for RTE / QNLI,
as in HF's GLUE processors). A row with the wrong number of cells, an unknown label or a
header that is not the task's raises :class:`GlueFormatError` naming file and line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import DittoError

SPLITS = ("train", "dev", "test")


class GlueFormatError(DittoError):
    """A GLUE file does not have its task's layout (names file, line and what was expected)."""


@dataclasses.dataclass(frozen=True)
class GlueExample:
    """One row: ``text_a`` (and ``text_b`` for pair tasks); ``label`` is an id into the
    task's labels, ``None`` for the unlabeled test split. ``line`` is the 1-based line in
    ``source`` (for error messages and tracing predictions back)."""

    guid: str
    text_a: str
    text_b: Optional[str]
    label: Optional[int]
    source: str = ""
    line: int = 0


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """The layout and metric of one GLUE task.

    ``columns`` / ``test_columns``: the header cells (or the cell names of CoLA's header-less
    train/dev files); ``text_columns``: names of the one or two text cells; ``label_column``;
    ``labels``: the label strings in id order; ``metric``: the task's headline metric
    (``"accuracy"``, ``"matthews"``, ``"f1"``).
    """

    name: str
    columns: tuple
    test_columns: tuple
    text_columns: tuple
    label_column: str
    labels: tuple
    metric: str
    has_header: bool = True  # train/dev (test always has one)
    id_column: Optional[str] = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


TASKS: dict[str, GlueTask] = {
    "rte": GlueTask(
        "RTE",
        ("index", "sentence1", "sentence2", "label"),
        ("index", "sentence1", "sentence2"),
        ("sentence1", "sentence2"),
        "label",
        ("entailment", "not_entailment"),
        "accuracy",
        id_column="index",
    ),
    "cola": GlueTask(
        "CoLA",
        ("source", "label", "original_mark", "sentence"),
        ("index", "sentence"),
        ("sentence",),
        "label",
        ("0", "1"),
        "matthews",
        has_header=False,
    ),
    "qqp": GlueTask(
        "QQP",
        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        ("id", "question1", "question2"),
        ("question1", "question2"),
        "is_duplicate",
        ("0", "1"),
        "f1",
        id_column="id",
    ),
    "qnli": GlueTask(
        "QNLI",
        ("index", "question", "sentence", "label"),
        ("index", "question", "sentence"),
        ("question", "sentence"),
        "label",
        ("entailment", "not_entailment"),
        "accuracy",
        id_column="index",
    ),
    "sst-2": GlueTask(
        "SST-2",
        ("sentence", "label"),
        ("index", "sentence"),
        ("sentence",),
        "label",
        ("0", "1"),
        "accuracy",
    ),
}
_ALIASES = {"sst2": "sst-2", "sst_2": "sst-2"}


def glue_task(name: str) -> GlueTask:
    """The :class:`GlueTask` for a name, case-insensitive (``"RTE"``, ``"sst2"``, ...)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise GlueFormatError(
            f"unknown GLUE task {name!r}: supported are {', '.join(t.name for t in TASKS.values())}"
        )
    return TASKS[key]


def glue_file(data_dir: Union[str, Path], split: str) -> Path:
    """``<data_dir>/<split>.tsv``, checked to exist (``split`` in train / dev / test)."""
    if split not in SPLITS:
        raise GlueFormatError(f"unknown split {split!r}: choose one of {SPLITS}")
    path = Path(data_dir) / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GLUE file (expected {split}.tsv in {data_dir})")
    return path


def read_glue_tsv(path: Union[str, Path], task: Union[str, GlueTask], split: Optional[str] = None) -> list[GlueExample]:
    """Every row of one GLUE file as :class:`GlueExample` s.

    ``split``: ``"test"`` for the unlabeled layout; by default taken from the file name
    (``test.tsv`` / ``test_matched.tsv`` → test, anything else labeled). Raises
    :class:`GlueFormatError` (``<file>:<line>: ...``) on a wrong header, a row with the
    wrong number of cells, a blank line or an unknown label.
    """
    path = Path(path)
    task = task if isinstance(task, GlueTask) else glue_task(task)
    if split is None:
        split = "test" if path.stem.startswith("test") else "labeled"
    test = split == "test"
    columns = task.test_columns if test else task.columns
    has_header = test or task.has_header
    label_to_id = {lab: i for i, lab in enumerate(task.labels)}
    text_idx = [columns.index(c) for c in task.text_columns]
    label_idx = None if test else columns.index(task.label_column)
    id_idx = columns.index(task.id_column or "index") if (task.id_column or test) else None

    def fail(line: int, what: str):
        raise GlueFormatError(f"{path}:{line}: {task.name} {'test' if test else 'train/dev'} file: {what}")

    with open(path, encoding="utf-8", newline="") as f:
        lines = [raw.rstrip("\r\n") for raw in f]
    while lines and not lines[-1].strip():  # blank lines at the very end are harmless
        lines.pop()
    if not lines and has_header:
        fail(1, f"empty file, expected the header {list(columns)}")
    examples: list[GlueExample] = []
    for line_no, row in enumerate(lines, start=1):
        cells = row.split("\t")
        if line_no == 1 and has_header:
            if tuple(c.strip() for c in cells) != columns:
                fail(line_no, f"header is {cells!r}, expected {list(columns)}")
            continue
        if not row.strip():
            fail(line_no, "blank line inside the file (GLUE files have none)")
        if len(cells) != len(columns):
            fail(
                line_no,
                f"{len(cells)} tab-separated cells, expected {len(columns)} ({', '.join(columns)})",
            )
        texts = [cells[i] for i in text_idx]
        label = None
        if label_idx is not None:
            lab = cells[label_idx].strip()
            if lab not in label_to_id:
                fail(line_no, f"label {lab!r} is not one of {list(task.labels)}")
            label = label_to_id[lab]
        guid = cells[id_idx] if id_idx is not None else f"{path.stem}-{line_no}"
        examples.append(
            GlueExample(
                guid=guid,
                text_a=texts[0],
                text_b=texts[1] if len(texts) > 1 else None,
                label=label,
                source=str(path),
                line=line_no,
            )
        )
    return examples


def load_glue(task: Union[str, GlueTask], data_dir: Union[str, Path], split: str = "dev") -> list[GlueExample]:
    """The examples of ``<data_dir>/<split>.tsv`` for ``task`` (see :func:`read_glue_tsv`)."""
    return read_glue_tsv(glue_file(data_dir, split), task, split)


def encode_examples(tokenizer, examples: Sequence[GlueExample], seq_len: int) -> dict:
    """Tokenised model inputs: ``input_ids``, ``attention_mask``, ``token_type_ids``
    (int32, ``(n, seq_len)``, padded / truncated) and ``labels`` (int32, −1 when unlabeled)."""
    import numpy as np

    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(
        a, b, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"
    )
    out = {k: np.asarray(enc[k], np.int32) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    out["labels"] = np.asarray([-1 if e.label is None else e.label for e in examples], np.int32)
    return out
