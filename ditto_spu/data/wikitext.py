"""WikiText-103 raw files (``wiki.train.raw``, ``wiki.valid.raw``, ``wiki.test.raw``) for perplexity.

Layout of the release (``wikitext-103-raw/``): one paragraph per line, every line starting
with a space; blank lines hold a single space; an article starts with the heading line
`` = Title = ``, its sections with `` = = Section = = `` (one more ``=`` a level, the same
number on both sides). The text keeps the release's tokenisation artefacts (`` @-@ ``,
`` @,@ ``, `` @.@ ``); :func:`detokenize` undoes them.

Perplexity follows the usual recipe for fixed-context models: the whole split as one text,
tokenised once, scored in windows of ``seq_len`` tokens moved by ``stride < seq_len``; each token
is counted once, in the first window where it is not part of the overlap
(:func:`perplexity_windows`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from ..errors import DittoError

SPLIT_FILES = {"train": "wiki.train.raw", "valid": "wiki.valid.raw", "test": "wiki.test.raw"}

_HEADING = re.compile(r"^(=(?: =)*) ([^=\s].*?) (=(?: =)*)$")


class WikitextFormatError(DittoError):
    """A file does not have the WikiText raw layout (names file and line)."""


@dataclasses.dataclass(frozen=True)
class WikiArticle:
    """One article: its title, the 1-based line of its title in ``source``, and its body
    lines (paragraphs and section headings, stripped, blank lines dropped)."""

    title: str
    line: int
    lines: tuple
    source: str = ""

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def wikitext_file(data_dir: Union[str, Path], split: str) -> Path:
    """``<data_dir>/wiki.<split>.raw`` (``split`` in train / valid / test), checked to exist."""
    if split not in SPLIT_FILES:
        raise WikitextFormatError(f"unknown WikiText split {split!r}: choose one of {sorted(SPLIT_FILES)}")
    path = Path(data_dir) / SPLIT_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (WikiText-103 raw keeps {SPLIT_FILES[split]} in {data_dir})")
    return path


def _heading_level(stripped: str, path, line_no) -> Optional[tuple[int, str]]:
    """(level, title) of a heading line, None for a paragraph; error on a broken heading."""
    if not (stripped.startswith("= ") and stripped.endswith(" =")):
        return None
    m = _HEADING.match(stripped)
    if m is None or len(m.group(1)) != len(m.group(3)):
        raise WikitextFormatError(
            f"{path}:{line_no}: malformed heading {stripped!r}: expected ' = Title = ' "
            "with the same number of '=' on both sides"
        )
    return (len(m.group(1)) + 1) // 2, m.group(2)


def read_wikitext(path: Union[str, Path]) -> list[WikiArticle]:
    """The articles of a WikiText raw file, in order.

    Raises :class:`WikitextFormatError` (``<file>:<line>: ...``) for a heading with
    unbalanced ``=``, text before the first article title, or a section heading (level
    ≥ 2) before any title.
    """
    path = Path(path)
    articles: list[WikiArticle] = []
    title: Optional[str] = None
    title_line = 0
    body: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            stripped = raw.strip()
            if not stripped:
                continue
            heading = _heading_level(stripped, path, line_no)
            if heading is not None and heading[0] == 1:
                if title is not None:
                    articles.append(WikiArticle(title, title_line, tuple(body), str(path)))
                title, title_line, body = heading[1], line_no, []
                continue
            if title is None:
                raise WikitextFormatError(
                    f"{path}:{line_no}: text before the first article title "
                    f"(expected a ' = Title = ' line first, got {stripped[:60]!r})"
                )
            body.append(stripped)
    if title is not None:
        articles.append(WikiArticle(title, title_line, tuple(body), str(path)))
    return articles


def wikitext_text(path: Union[str, Path]) -> str:
    """The whole file as one text for perplexity: its lines stripped of the layout's
    leading / trailing space, blank lines kept as paragraph breaks. The file is validated
    first (:func:`read_wikitext`)."""
    path = Path(path)
    read_wikitext(path)
    with open(path, encoding="utf-8") as f:
        return "\n".join(line.strip() for line in f).strip("\n")


_DETOK = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))


def detokenize(text: str) -> str:
    """Undo WikiText's number / hyphen splitting (``1 @,@ 000`` → ``1,000``)."""
    for a, b in _DETOK:
        text = text.replace(a, b)
    return text


def perplexity_windows(
    token_ids, seq_len: int, stride: Optional[int] = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows ``(ids, score_mask)`` over a token sequence for perplexity.

    ``ids``: ``seq_len`` consecutive tokens (the last window may be shorter); ``score_mask``
    (same length, bool): which positions' next-token prediction is scored, i.e. position
    ``t`` predicts ``ids[t+1]`` (the window's last position is never scored). With ``stride < seq_len`` windows overlap and only the
    targets not scored by an earlier window count, so every token but the first is scored
    exactly once. ``stride`` defaults to ``seq_len − 1`` (windows sharing one token).
    """
    ids = np.asarray(token_ids)
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    stride = stride or seq_len - 1
    if not 0 < stride < seq_len:
        raise ValueError(
            f"stride must lie in (0, seq_len - 1 = {seq_len - 1}]: a window's last token is "
            f"predicted by no position of it, so the next window must start at or before it; got {stride}"
        )
    n = len(ids)
    scored_up_to = 0  # targets ids[1..scored_up_to] already scored
    start = 0
    while start < n - 1:
        end = min(start + seq_len, n)
        window = ids[start:end]
        # position t predicts ids[start+t+1], which must lie in the window (the last
        # position predicts nothing); score it if no earlier window did
        targets = np.arange(start + 1, end + 1)
        mask = (targets > scored_up_to) & (targets < end)
        yield window, mask
        scored_up_to = end - 1
        if end == n:
            break
        start += stride
