"""WikiText-103 raw layout: articles, headings, perplexity windows (tests/data/wikitext)."""

from pathlib import Path

import numpy as np
import pytest

from ditto_spu.data import (
    WikitextFormatError,
    detokenize,
    perplexity_windows,
    read_wikitext,
    wikitext_file,
    wikitext_text,
)

WIKI = Path(__file__).resolve().parents[1] / "data" / "wikitext"


def test_articles_titles_and_sections():
    arts = read_wikitext(wikitext_file(WIKI, "train"))
    assert [a.title for a in arts] == ["Valkyria Chronicles III", "Tower Building of the Little Rock Arsenal"]
    assert arts[0].line == 2 and arts[1].line == 15
    assert "= = Gameplay = =" in arts[0].lines and "= = = Units = = =" in arts[0].lines
    assert all(line.strip() == line and line for a in arts for line in a.lines)
    assert [a.title for a in read_wikitext(wikitext_file(WIKI, "valid"))] == ["Homarus gammarus"]
    assert len(read_wikitext(wikitext_file(WIKI, "test"))) == 1


def test_text_and_detokenize():
    text = wikitext_text(wikitext_file(WIKI, "test"))
    assert text.startswith("= Robert Boulter =")
    assert "guest @-@ starring" in text
    assert "guest-starring" in detokenize(text)
    assert detokenize("1 @,@ 200 and 3 @.@ 5") == "1,200 and 3.5"


@pytest.mark.parametrize(
    "content, line, words",
    [
        (" \n = Title = \n \n = = Broken = \n", 4, "malformed heading"),
        (" \n Some text first . \n = Title = \n", 2, "text before the first article title"),
        (" = Title \n", None, None),  # not a heading at all: text before a title
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "wiki.valid.raw"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WikitextFormatError) as err:
        read_wikitext(path)
    if line is not None:
        assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_missing_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        wikitext_file(tmp_path, "test")
    with pytest.raises(WikitextFormatError, match="split"):
        wikitext_file(WIKI, "validation")


@pytest.mark.parametrize("n, seq_len, stride", [(10, 4, None), (10, 4, 2), (11, 5, 3), (3, 8, None), (9, 3, 1)])
def test_windows_score_every_token_but_the_first_once(n, seq_len, stride):
    ids = np.arange(100, 100 + n)
    scored = []
    for window, mask in perplexity_windows(ids, seq_len, stride):
        assert len(window) <= seq_len and window.shape == mask.shape
        start = int(window[0]) - 100
        scored += [start + t + 1 for t in np.nonzero(mask)[0]]
    assert sorted(scored) == list(range(1, n))


def test_stride_that_would_skip_tokens_is_refused():
    with pytest.raises(ValueError, match="stride"):
        list(perplexity_windows(np.arange(10), 4, 4))
