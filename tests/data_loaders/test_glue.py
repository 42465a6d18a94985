"""GLUE TSV loaders on hand-written samples in the official layouts (tests/data/glue)."""

from pathlib import Path

import pytest

from ditto_spu.data import GlueFormatError, glue_task, load_glue, read_glue_tsv
from ditto_spu.data.glue import encode_examples
from ditto_spu.distill.student import HashTokenizer

GLUE = Path(__file__).resolve().parents[1] / "data" / "glue"


@pytest.mark.parametrize(
    "task, n_train, n_dev, n_test, pair",
    [("RTE", 4, 3, 2, True), ("CoLA", 5, 4, 2, False), ("QQP", 4, 3, 2, True),
     ("QNLI", 3, 2, 1, True), ("SST-2", 4, 3, 2, False)],
)
def test_every_task_and_split_loads(task, n_train, n_dev, n_test, pair):
    spec = glue_task(task)
    train = load_glue(task, GLUE / task, "train")
    dev = load_glue(task, GLUE / task, "dev")
    test = load_glue(task, GLUE / task, "test")
    assert (len(train), len(dev), len(test)) == (n_train, n_dev, n_test)
    for e in train + dev:
        assert e.label in range(spec.num_labels)
        assert (e.text_b is not None) == pair and e.text_a
    assert all(e.label is None for e in test)
    assert spec.is_pair == pair


def test_labels_and_columns_are_the_right_cells():
    rte = load_glue("rte", GLUE / "RTE", "dev")
    assert rte[0].guid == "0" and rte[0].text_b == "Christopher Reeve had an accident."
    assert [e.label for e in rte] == [1, 0, 1]  # entailment = 0, not_entailment = 1
    cola = load_glue("cola", GLUE / "CoLA", "train")  # no header: the first row is data
    assert cola[0].text_a.startswith("Our friends won't buy") and cola[0].line == 1
    assert [e.label for e in cola] == [1, 1, 0, 1, 0]
    qqp = load_glue("QQP", GLUE / "QQP", "dev")
    assert qqp[0].guid == "40066" and qqp[0].text_a == 'What are some examples of "cute" couple names?'
    assert [e.label for e in qqp] == [1, 1, 0]
    sst = load_glue("sst2", GLUE / "SST-2", "train")
    assert sst[2].label == 1 and sst[2].line == 4 and sst[2].text_b is None


def _corrupt(tmp_path, task, split, edit):
    src = GLUE / task / f"{split}.tsv"
    lines = src.read_text(encoding="utf-8").split("\n")
    lines = edit(lines)
    dst = tmp_path / task / f"{split}.tsv"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines), encoding="utf-8")
    return dst


@pytest.mark.parametrize(
    "task, split, edit, line, words",
    [
        ("RTE", "train", lambda ls: ls[:2] + [ls[2].replace("\tentailment", "")] + ls[3:], 3, "3 tab-separated cells, expected 4"),
        ("RTE", "dev", lambda ls: ls[:1] + [ls[1].replace("not_entailment", "contradiction")] + ls[2:], 2, "label 'contradiction'"),
        ("CoLA", "train", lambda ls: ls[:3] + [ls[3] + "\textra"] + ls[4:], 4, "5 tab-separated cells"),
        ("CoLA", "dev", lambda ls: ls[:1] + [ls[1].replace("\t1\t", "\tyes\t", 1)] + ls[2:], 2, "label 'yes'"),
        ("QQP", "train", lambda ls: ls[:4] + [ls[4].split("\t1")[0]] + ls[5:], 5, "expected 6"),
        ("QQP", "dev", lambda ls: ["id\tquestion1\tquestion2\tis_duplicate"] + ls[1:], 1, "header"),
        ("QNLI", "train", lambda ls: ls[:2] + [""] + ls[2:], 3, "blank line"),
        ("SST-2", "train", lambda ls: ls[:2] + [ls[2].replace("\t0", "\t2")] + ls[3:], 3, "label '2'"),
        ("SST-2", "test", lambda ls: ls[:2] + ["no index here"] + ls[2:], 3, "1 tab-separated cells, expected 2"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, task, split, edit, line, words):
    path = _corrupt(tmp_path, task, split, edit)
    with pytest.raises(GlueFormatError) as err:
        load_glue(task, path.parent, split)
    msg = str(err.value)
    assert f"{path}:{line}:" in msg and words in msg and task in msg


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        load_glue("RTE", tmp_path, "train")
    with pytest.raises(GlueFormatError, match="unknown GLUE task 'MNLI'"):
        glue_task("MNLI")
    with pytest.raises(GlueFormatError, match="split"):
        load_glue("RTE", GLUE / "RTE", "validation")


def test_trailing_blank_lines_are_harmless(tmp_path):
    path = _corrupt(tmp_path, "SST-2", "dev", lambda ls: ls + ["", ""])
    assert len(read_glue_tsv(path, "SST-2")) == 3


def test_encode_examples_pairs_and_labels():
    ex = load_glue("RTE", GLUE / "RTE", "dev")
    enc = encode_examples(HashTokenizer(64), ex, 24)
    assert enc["input_ids"].shape == (3, 24) and enc["labels"].tolist() == [1, 0, 1]
    assert enc["token_type_ids"].max() == 1  # second segment present
