"""Utility metrics: accuracy, Matthews correlation, F1, perplexity, cosine similarity, and
the semantic-search metrics of sentence embeddings (top-1 neighbour agreement, Spearman
correlation of pairwise similarities) of a judged model against a reference.

Definitions follow scikit-learn's (``accuracy_score``, ``matthews_corrcoef``, binary
``f1_score``) so numbers compare with published GLUE results; they are computed here with
numpy from the confusion matrix. Degenerate cases return what scikit-learn returns
(0.0 where a denominator vanishes).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    if t.size == 0:
        raise ValueError("no labels to score")
    return t, p


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches."""
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, labels: Optional[list] = None) -> np.ndarray:
    """``C[i, j]`` = number of samples with true label ``labels[i]`` predicted ``labels[j]``
    (``labels``: sorted union of both by default)."""
    t, p = _labels(y_true, y_pred)
    labels = list(np.unique(np.concatenate([t, p]))) if labels is None else list(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    c = np.zeros((len(labels), len(labels)), np.int64)
    for a, b in zip(t.tolist(), p.tolist()):
        c[index[a], index[b]] += 1
    return c


def matthews_corrcoef(y_true, y_pred) -> float:
    """Matthews correlation coefficient (multi-class form of Gorodkin 2004, as sklearn):

    ``(c·s − Σ_k p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))`` with ``c`` correct, ``s``
    samples, ``p_k`` / ``t_k`` predicted / true counts of class ``k``; 0.0 when a factor
    of the denominator is 0. Binary: ``(TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``.
    """
    c = confusion_matrix(y_true, y_pred).astype(np.float64)
    t_k = c.sum(axis=1)
    p_k = c.sum(axis=0)
    correct = np.trace(c)
    s = c.sum()
    cov_ytyp = correct * s - np.dot(t_k, p_k)
    cov_ypyp = s * s - np.dot(p_k, p_k)
    cov_ytyt = s * s - np.dot(t_k, t_k)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def precision_recall_f1(y_true, y_pred, pos_label=1) -> tuple[float, float, float]:
    """Binary precision, recall and F1 of ``pos_label`` (0.0 for an empty denominator)."""
    t, p = _labels(y_true, y_pred)
    tp = float(np.sum((p == pos_label) & (t == pos_label)))
    fp = float(np.sum((p == pos_label) & (t != pos_label)))
    fn = float(np.sum((p != pos_label) & (t == pos_label)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def f1_score(y_true, y_pred, pos_label=1) -> float:
    """Binary F1 = 2·TP / (2·TP + FP + FN) of ``pos_label`` (QQP's metric)."""
    return precision_recall_f1(y_true, y_pred, pos_label)[2]


def perplexity(total_nll: float, num_tokens: int) -> float:
    """``exp(total_nll / num_tokens)``: perplexity from a summed negative log-likelihood
    (natural log) over ``num_tokens`` scored tokens."""
    if num_tokens <= 0:
        raise ValueError(f"perplexity needs at least one scored token, got {num_tokens}")
    return float(math.exp(total_nll / num_tokens))


def token_nll(logits, targets, mask=None) -> tuple[float, int]:
    """(Σ −log softmax(logits)[target], number of tokens) over positions where ``mask``
    holds. ``logits``: ``(..., vocab)``; ``targets``: ``(...)`` ints."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)[..., 0]
    m = np.ones(nll.shape, bool) if mask is None else np.asarray(mask, bool)
    return float(nll[m].sum()), int(m.sum())


def cosine_similarity(a, b, eps: float = 1e-12) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(-1)
    den = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), eps)
    return num / den


def relative_l2(a, b) -> float:
    """``||a − b|| / ||b||`` over all elements (blind to nothing cosine is blind to: a 2^k
    scale error shows)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _embedding_pair(emb, ref) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``(n, d)`` arrays of the same shape, ``n ≥ 3``, all finite."""
    e = np.asarray(emb, np.float64)
    r = np.asarray(ref, np.float64)
    if e.ndim != 2 or r.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n_sentences, dim): got shapes {e.shape} and {r.shape}")
    if e.shape != r.shape:
        raise ValueError(f"embeddings and reference differ in shape: {e.shape} vs {r.shape}")
    _check_neighbour_input(e)
    _check_neighbour_input(r)
    return e, r


def _check_neighbour_input(e: np.ndarray) -> None:
    if e.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n_sentences, dim): got shape {e.shape}")
    if e.shape[0] < 3:
        raise ValueError(f"neighbour metrics need at least 3 sentences: got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"embeddings of shape {e.shape} contain NaN or infinite values")


def pairwise_cosine_similarity(emb, eps: float = 1e-12) -> np.ndarray:
    """``S[i, j]`` = cosine similarity of rows ``i`` and ``j`` of an ``(n, d)`` array
    (float64; the same formula as :func:`cosine_similarity`, for all pairs at once)."""
    e = np.asarray(emb, np.float64)
    norms = np.linalg.norm(e, axis=-1)
    return (e @ e.T) / np.maximum(np.outer(norms, norms), eps)


def nearest_neighbours(emb) -> np.ndarray:
    """For each row of an ``(n, d)`` array (``n ≥ 3``), the index of its nearest OTHER row
    by cosine similarity (itself excluded; exact ties go to the lower index)."""
    e = np.asarray(emb, np.float64)
    _check_neighbour_input(e)
    sim = pairwise_cosine_similarity(e)
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)  # argmax returns the first (lowest) index of a tie


def neighbour_agreement(emb, ref) -> float:
    """Top-1 neighbour agreement: the fraction of sentences whose nearest other sentence
    under ``emb`` (the judged model) is the one under ``ref`` (the reference, e.g. the
    FP32 teacher). Both ``(n, d)`` with the same shape, ``n ≥ 3``."""
    e, r = _embedding_pair(emb, ref)
    return float(np.mean(nearest_neighbours(e) == nearest_neighbours(r)))


def pairwise_similarity_spearman(emb, ref) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``: average ranks for ties) of
    the cosine similarities of all pairs ``i < j`` under ``emb`` vs under ``ref``. NaN
    when either set of similarities is constant (a rank correlation is then undefined)."""
    from scipy.stats import spearmanr

    e, r = _embedding_pair(emb, ref)
    iu = np.triu_indices(e.shape[0], k=1)
    a, b = pairwise_cosine_similarity(e)[iu], pairwise_cosine_similarity(r)[iu]
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def embedding_task_metrics(emb, ref) -> dict:
    """The semantic-search view of how well ``emb`` (the judged model's ``(n, d)``
    sentence embeddings) matches ``ref`` (the reference's, same sentences in the same
    order): ``top1_neighbour_agreement`` (:func:`neighbour_agreement`),
    ``similarity_spearman`` (:func:`pairwise_similarity_spearman`) and ``n_sentences``.
    Raises ``ValueError`` (naming the shapes) for fewer than 3 sentences, mismatched
    shapes or non-finite values."""
    e, r = _embedding_pair(emb, ref)
    return {
        "top1_neighbour_agreement": neighbour_agreement(e, r),
        "similarity_spearman": pairwise_similarity_spearman(e, r),
        "n_sentences": int(e.shape[0]),
    }


#: GLUE task → its headline metric (name of a function above).
GLUE_METRICS = {"RTE": "accuracy", "CoLA": "matthews", "QQP": "f1", "QNLI": "accuracy", "SST-2": "accuracy"}


def glue_metrics(task_name: str, y_true, y_pred) -> dict:
    """The scores GLUE reports for a task: accuracy always; plus ``matthews`` for CoLA and
    ``f1`` for QQP. Keys: ``accuracy``, ``matthews``, ``f1``, ``main`` (the headline)."""
    out = {"accuracy": accuracy(y_true, y_pred)}
    metric = GLUE_METRICS.get(task_name)
    if metric is None:
        raise ValueError(f"unknown GLUE task {task_name!r}: known {sorted(GLUE_METRICS)}")
    if metric == "matthews":
        out["matthews"] = matthews_corrcoef(y_true, y_pred)
    elif metric == "f1":
        out["f1"] = f1_score(y_true, y_pred)
    out["main"] = out[metric]
    return out
