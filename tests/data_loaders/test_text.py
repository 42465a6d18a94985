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


def test_random_windows_come_from_training_documents_only():
    from ditto_spu.data import random_windows

    c = builtin_corpus()
    assert c.train_documents and len(c.train_documents) > len(c.held_out_docs)
    wins = random_windows(c.train_documents, 300, seed=3, min_words=4, max_words=20)
    assert wins == random_windows(c.train_documents, 300, seed=3, min_words=4, max_words=20)
    assert wins != random_windows(c.train_documents, 300, seed=4, min_words=4, max_words=20)
    assert all(4 <= len(w.split()) <= 20 for w in wins)
    joined = [" ".join(d.split()) for d in c.train_documents]
    assert all(any(w in d for d in joined) for w in wins[:50])  # real consecutive words
    held = " ".join(c.held_out)
    assert not [w for w in wins if len(w.split()) >= 12 and w in held]  # not the held-out text
    assert len(set(wins)) > 290


def test_random_windows_reject_unusable_input():
    from ditto_spu.data import random_windows

    assert random_windows(["a b c d e"], 0) == []
    with pytest.raises(TextDataError, match="at least 4 words"):
        random_windows(["too short"], 3)
    with pytest.raises(ValueError):
        random_windows(["a b c d e"], 2, min_words=6, max_words=5)


def test_docstring_sentences_read_docstrings_only_and_skip_tests_and_excluded(tmp_path):
    from ditto_spu.data import docstring_sentences

    pkg = tmp_path / "pkg"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "mod.py").write_text(
        '"""The module explains what it does in plain words.\n\n    >>> code()\n"""\n'
        "# A comment is not a docstring and never counts here.\n"
        "def f():\n"
        '    """Return the answer to the question asked here.\n\n'
        "    This sentence is held out and must not appear.\n"
        '    """\n'
        "    s = 'A string literal is not a docstring either.'\n"
        "    return s\n",
        encoding="utf-8",
    )
    (pkg / "tests" / "test_mod.py").write_text('"""A test module docstring that must be skipped."""\n', encoding="utf-8")
    (pkg / "broken.py").write_text("def (:\n", encoding="utf-8")
    got = docstring_sentences(tmp_path, exclude=["This sentence is held out and must not appear."])
    assert got == ["The module explains what it does in plain words.", "Return the answer to the question asked here."]


def test_stdlib_docstrings_are_more_text_and_never_the_held_out_set():
    from ditto_spu.data import docstring_sentences

    held = builtin_corpus().held_out
    a = docstring_sentences(exclude=held)
    assert a == docstring_sentences(exclude=held)  # deterministic
    assert len(a) > 5 * len(builtin_corpus().train)
    assert not set(a) & set(held) and len(set(a)) == len(a)
    assert sum(s.count(" the ") for s in a) > 2000  # English prose
