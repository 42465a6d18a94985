"""Metrics against values worked out by hand (scikit-learn's definitions)."""

import math

import numpy as np
import pytest

from ditto_spu import metrics as M

# TP = 3 (0, 2, 6), FN = 1 (1), TN = 2 (3, 5), FP = 2 (4, 7)
Y_TRUE = [1, 1, 1, 0, 0, 0, 1, 0]
Y_PRED = [1, 0, 1, 0, 1, 0, 1, 1]


def test_binary_metrics_by_hand():
    assert M.accuracy(Y_TRUE, Y_PRED) == 5 / 8
    p, r, f1 = M.precision_recall_f1(Y_TRUE, Y_PRED)
    assert (p, r) == (3 / 5, 3 / 4) and f1 == pytest.approx(6 / 9)
    assert M.f1_score(Y_TRUE, Y_PRED) == pytest.approx(2 / 3)
    # (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 − 2) / sqrt(5·4·4·3)
    assert M.matthews_corrcoef(Y_TRUE, Y_PRED) == pytest.approx(4 / math.sqrt(240))
    np.testing.assert_array_equal(M.confusion_matrix(Y_TRUE, Y_PRED), [[2, 2], [1, 3]])


def test_matthews_known_values():
    # scikit-learn's documented example
    assert M.matthews_corrcoef([1, 1, 1, -1], [1, -1, 1, 1]) == pytest.approx(-1 / 3)
    assert M.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert M.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    assert M.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1]) == 0.0  # constant prediction
    # multi-class (Gorodkin): c = 5, s = 6, t = (2,2,2), p = (2,1,3): 18 / sqrt(22·24)
    assert M.matthews_corrcoef([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2]) == pytest.approx(18 / math.sqrt(528))


def test_f1_degenerate_cases():
    assert M.f1_score([0, 0], [0, 0]) == 0.0
    assert M.f1_score([1, 1], [1, 1]) == 1.0
    assert M.f1_score([0, 1, 0], [0, 0, 0]) == 0.0


def test_perplexity_and_token_nll():
    assert M.perplexity(4 * math.log(2), 4) == pytest.approx(2.0)
    logits = np.zeros((2, 3, 4))  # uniform over 4 tokens
    nll, n = M.token_nll(logits, np.ones((2, 3), int), mask=[[1, 1, 0], [1, 0, 0]])
    assert n == 3 and nll == pytest.approx(3 * math.log(4))
    assert M.perplexity(nll, n) == pytest.approx(4.0)
    confident = np.array([[10.0, 0, 0, 0]])
    assert M.perplexity(*M.token_nll(confident, np.array([0]))) == pytest.approx(1 + 3 * math.exp(-10), rel=1e-6)
    with pytest.raises(ValueError):
        M.perplexity(0.0, 0)


def test_glue_metrics_and_cosine():
    assert M.glue_metrics("CoLA", Y_TRUE, Y_PRED)["main"] == pytest.approx(4 / math.sqrt(240))
    assert M.glue_metrics("QQP", Y_TRUE, Y_PRED)["main"] == pytest.approx(2 / 3)
    assert M.glue_metrics("RTE", Y_TRUE, Y_PRED) == {"accuracy": 0.625, "main": 0.625}
    np.testing.assert_allclose(M.cosine_similarity([[1, 0], [1, 1]], [[0, 2], [2, 2]]), [0.0, 1.0])
    with pytest.raises(ValueError):
        M.accuracy([1, 2], [1])
