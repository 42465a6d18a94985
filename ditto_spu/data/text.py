"""Unlabeled English text for distillation: any text file, or the built-in corpus.

The built-in corpus is Python's own documentation, ``pydoc_data.topics`` (the text that
``help("assert")`` prints; part of the standard library, so present offline on every
machine): ~80 topics, ~465k characters. :func:`builtin_corpus` keeps its prose sentences
(code samples, grammar rules, headings and tables dropped) and splits them by TOPIC into a
training part and a held-out part, deterministically: a topic is held out when the CRC-32
of its name falls in the held-out fraction, so held-out sentences come from documents the
training never saw, and the split does not depend on the Python version's topic order.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from pathlib import Path
from typing import Iterable, Union

from ..errors import DittoError

UNITS = ("sentence", "line", "paragraph")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.", "No.")
_UNDERLINE = re.compile(r"^[*=\-~^\"]{3,}\s*$")


class TextDataError(DittoError):
    """A text source is unusable (unreadable, not UTF-8, no sentences)."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Sentences for training and for held-out evaluation, plus where they came from.
    ``train_documents``: the whole text of the training documents (code samples and
    grammar included; sentences that are also held out cut out), the source of
    :func:`random_windows`."""

    train: tuple
    held_out: tuple
    source: str
    held_out_docs: tuple = ()
    train_documents: tuple = ()


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph of prose (whitespace collapsed). A period after a common
    abbreviation (``e.g.``, ``i.e.`` ...) does not end a sentence."""
    text = " ".join(paragraph.split())
    if not text:
        return []
    protected = text
    for i, abbr in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbr, f"\0{i}\0")
    out = []
    for piece in _SENTENCE_END.split(protected):
        for i, abbr in enumerate(_ABBREVIATIONS):
            piece = piece.replace(f"\0{i}\0", abbr)
        piece = piece.strip()
        if piece:
            out.append(piece)
    return out


def is_prose(sentence: str, min_words: int = 5, max_words: int = 80) -> bool:
    """A heuristic for English prose: enough words, mostly letters, starts like a sentence,
    ends with punctuation, no grammar-rule / code symbols."""
    words = sentence.split()
    if not (min_words <= len(words) <= max_words):
        return False
    if not re.match(r"[\"'(]?[A-Z]", sentence) or sentence[-1] not in ".!?:)\"'":
        return False
    if any(tok in sentence for tok in ("::=", ">>>", "...:", "{}", "()")):
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters / len(sentence) >= 0.8


def _prose_paragraphs(text: str) -> Iterable[str]:
    """Paragraphs of a reStructuredText-like document that are prose: not indented (code
    and grammar blocks are), not headings (a line underlined with ``***`` / ``===``)."""
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        if any(_UNDERLINE.match(ln.strip()) for ln in lines):
            continue  # a heading (or a table border)
        if lines[0].startswith((" ", "\t")):
            continue  # code sample, grammar rule, literal block
        first = lines[0].lstrip()
        if first.startswith(("* ", "- ")):  # a bullet: keep its prose
            lines[0] = first[2:]
        yield " ".join(ln.strip() for ln in lines)


def document_sentences(text: str, min_words: int = 5, max_words: int = 80) -> list[str]:
    """The prose sentences of one document (see :func:`is_prose`), in order."""
    out = []
    for para in _prose_paragraphs(text):
        out.extend(s for s in split_sentences(para) if is_prose(s, min_words, max_words))
    return out


def _held_out_doc(name: str, fraction: float) -> bool:
    return (zlib.crc32(name.encode("utf-8")) % 10_000) < fraction * 10_000


def builtin_corpus(held_out_fraction: float = 0.15, min_words: int = 5, max_words: int = 80) -> Corpus:
    """Prose sentences of ``pydoc_data.topics``, split by topic into train / held-out.

    Deterministic for a given ``pydoc_data`` text (no RNG); ``held_out_fraction`` of the
    topics (by CRC-32 of the topic name, see the module docstring) are held out.

    With the defaults, ``held_out`` is the fixed, versioned held-out set of the sentence-
    embedding metrics (mean cosine, top-1 neighbour agreement, Spearman correlation of
    pairwise similarities: :func:`ditto_spu.metrics.embedding_task_metrics`, reported by
    ``ditto-spu distill`` / ``eval --data builtin``). Its version is this rule plus the
    Python release's ``pydoc_data`` text: topics taken in sorted order, a topic held out
    when ``crc32(name) % 10000 < 1500``, prose sentences of 5–80 words, duplicates kept
    once, in order; no RNG, no dependence on set or hash order (``PYTHONHASHSEED``).
    Under Python 3.11.7 it is 131 sentences from 10 topics (``assert``, ``bitwise``,
    ``callable-types``, ``else``, ``if``, ``naming``, ``objects``, ``pass``, ``try``,
    ``while``), whose ``hashlib.sha256("\\n".join(held_out).encode()).hexdigest()`` is
    ``13122e399aa7e31dabaab017b18482241fbec6fff4d27bf736153ceb5f5d794f``. Another Python
    release may reword its documentation: compare the count and digest before comparing
    numbers across machines. ``eval --num N`` / ``distill --max-held-out N``
    score its first ``N`` sentences.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must lie in (0, 1), got {held_out_fraction}")
    from pydoc_data.topics import topics

    train, held, held_docs, train_docs = [], [], [], []
    for name in sorted(topics):
        sentences = document_sentences(topics[name], min_words, max_words)
        if _held_out_doc(name, held_out_fraction):
            held.extend(sentences)
            held_docs.append(name)
        else:
            train.extend(sentences)
            train_docs.append(topics[name])
    if not train or not held:
        raise TextDataError(
            f"pydoc_data.topics gave {len(train)} training and {len(held)} held-out sentences; "
            "choose another held_out_fraction"
        )
    held = _dedupe(held)
    held_set = set(held)  # a few sentences recur in several topics: keep them held out only
    train = [s for s in _dedupe(train) if s not in held_set]
    docs = []
    for doc in train_docs:  # whitespace collapsed, held-out sentences cut out
        doc = " ".join(doc.split())
        for h in held_set:
            doc = doc.replace(h, " ")
        docs.append(doc)
    return Corpus(tuple(train), tuple(held), "pydoc_data.topics", tuple(held_docs), tuple(docs))


def random_windows(documents: Iterable[str], n: int, *, seed: int = 0, min_words: int = 4, max_words: int = 48) -> list[str]:
    """``n`` random spans of consecutive words from ``documents`` (whitespace collapsed):
    a document drawn in proportion to its length, a start, a length uniform in
    ``[min_words, max_words]``. Distillation needs no labels, so any text the teacher
    can read is a training example: spans across sentence, paragraph and code boundaries
    give the student far more contexts than the documents' sentences alone.
    Deterministic for a given ``seed``."""
    import numpy as np

    if n < 0 or not 1 <= min_words <= max_words:
        raise ValueError(f"need n ≥ 0 and 1 ≤ min_words ≤ max_words, got {n}, {min_words}, {max_words}")
    docs = [d.split() for d in documents]
    docs = [d for d in docs if len(d) >= min_words]
    if n and not docs:
        raise TextDataError(f"no document with at least {min_words} words to draw windows from")
    rng = np.random.default_rng(seed)
    sizes = np.array([len(d) for d in docs], np.float64)
    out = []
    for i in rng.choice(len(docs), size=n, p=sizes / sizes.sum()) if n else ():
        words = docs[i]
        length = int(rng.integers(min_words, min(max_words, len(words)) + 1))
        start = int(rng.integers(0, len(words) - length + 1))
        out.append(" ".join(words[start : start + length]))
    return out


#: Packages of the standard library whose docstrings :func:`docstring_sentences` skips: test
#: suites (code-like, repetitive) and ``pydoc_data`` (the built-in corpus itself).
_SKIP_PACKAGES = ("test", "tests", "idle_test", "unittest_tests", "lib2to3", "pydoc_data", "site-packages",
                  "dist-packages", "__pycache__", "ensurepip", "venv")


def docstring_sentences(root: Union[str, Path, None] = None, *, exclude: Iterable[str] = (),
                        min_words: int = 5, max_words: int = 80) -> list[str]:
    """Prose sentences of the docstrings (module, class, function) of the ``.py`` files
    under ``root`` (default: the running Python's standard library), read with :mod:`ast`
    (nothing is imported): more training text for distillation that is present offline on
    every machine, ~13k sentences under Python 3.11.7.

    Files in sorted path order, test suites and ``pydoc_data`` skipped (``_SKIP_PACKAGES``),
    sentences as :func:`document_sentences` keeps them, duplicates kept once, and every
    sentence in ``exclude`` dropped (pass the held-out set: the built-in corpus holds out
    pydoc_data topics, which no docstring is, and this keeps any sentence they share out of
    training too). Deterministic; no RNG."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    excluded = set(exclude)
    out, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part in _SKIP_PACKAGES or part.startswith("test_") for part in parts):
            continue
        try:
            tree = ast.parse(path.read_text("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue  # not Python 3 source in UTF-8 (a few stdlib data files)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                for s in document_sentences(doc, min_words, max_words) if doc else ():
                    if s not in seen and s not in excluded:
                        seen.add(s)
                        out.append(s)
    return out


def _dedupe(items: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for s in items:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def read_text(path: Union[str, Path], unit: str = "sentence", min_words: int = 3) -> list[str]:
    """Unlabeled text units from any UTF-8 text file.

    ``unit``: ``"line"`` (each non-blank line), ``"paragraph"`` (blocks separated by blank
    lines, whitespace collapsed) or ``"sentence"`` (paragraphs split into sentences).
    Units with fewer than ``min_words`` words are dropped. Raises :class:`TextDataError`
    naming the file (and line, for bytes that are not UTF-8) when nothing usable is left.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TextDataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if unit == "line":
        units = [" ".join(ln.split()) for ln in text.splitlines()]
    else:
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        if unit == "paragraph":
            units = paragraphs
        else:
            units = [s for p in paragraphs for s in split_sentences(p)]
    units = [u for u in units if len(u.split()) >= min_words]
    if not units:
        raise TextDataError(f"{path}: no {unit} with at least {min_words} words")
    return units


def train_held_out_split(units: list[str], held_out_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """A deterministic split of text units (CRC-32 of each unit; no RNG), for files that
    do not come with a held-out part. Both parts are non-empty when there are ≥ 2 units."""
    held = [u for u in units if _held_out_doc(u, held_out_fraction)]
    train = [u for u in units if not _held_out_doc(u, held_out_fraction)]
    if len(units) >= 2 and (not held or not train):
        held, train = units[-1:], units[:-1]
    return train, held


def calibration_sentences(n: int, *, min_words: int = 6, max_words: int = 40) -> list[str]:
    """N sentences of English prose from Python's documentation (``pydoc_data.topics``),
    spread evenly over all topics, deterministic: calibration texts that need no download."""
    from pydoc_data.topics import topics

    sentences = []
    for key in sorted(topics):
        text = re.sub(r"\s+", " ", topics[key])
        for s in re.split(r"(?<=[.!?])\s+", text):
            words = s.split()
            if min_words <= len(words) <= max_words and re.match(r"^[A-Z][a-z]", s) and not re.search(r"[>{}=|]", s):
                sentences.append(s)
    if not sentences:
        raise TextDataError("pydoc_data.topics has no usable sentences")
    step = max(1, len(sentences) // max(n, 1))
    return [sentences[(i * step) % len(sentences)] for i in range(n)]
