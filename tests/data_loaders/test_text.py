"""Unlabeled text: any file, and the built-in pydoc_data.topics corpus."""

import pytest

from ditto_spu.data import TextDataError, builtin_corpus, read_text, split_sentences, train_held_out_split


def test_builtin_corpus_is_real_english_split_by_topic():
    a, b = builtin_corpus(), builtin_corpus()
    assert a == b  # deterministic
    assert len(a.train) > 500 and len(a.held_out) > 50
    assert not set(a.train) & set(a.held_out)
    for s in a.train[:200] + a.held_out[:50]:
        assert s[0].isupper() or s[0] in "\"'(" and len(s.split()) >= 5
        assert "::=" not in s and ">>>" not in s
    assert "assert" in a.held_out_docs or a.held_out_docs  # held out by topic
    assert sum(s.count(" the ") for s in a.train) > 500  # English prose, not code


def test_split_sentences_keeps_abbreviations():
    assert split_sentences("One sentence, e.g. this. Two here!  Three?") == [
        "One sentence, e.g. this.", "Two here!", "Three?"
    ]


def test_read_text_units(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("First line is here. Second sentence is here.\nstill the same paragraph now\n\nAnother paragraph with words.\nok\n", encoding="utf-8")
    assert read_text(p, "line") == ["First line is here. Second sentence is here.", "still the same paragraph now", "Another paragraph with words."]
    assert len(read_text(p, "paragraph")) == 2
    assert read_text(p)[:2] == ["First line is here.", "Second sentence is here. still the same paragraph now"]
    train, held = train_held_out_split(read_text(p))
    assert train and held and not set(train) & set(held)


def test_bad_text_files_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"good line of text here\nanother good line\n\xff\xfe broken\n")
    with pytest.raises(TextDataError, match=rf"{p}:3: not UTF-8"):
        read_text(p)
    empty = tmp_path / "empty.txt"
    empty.write_text("a b\n\n", encoding="utf-8")
    with pytest.raises(TextDataError, match="empty.txt: no sentence"):
        read_text(empty)
