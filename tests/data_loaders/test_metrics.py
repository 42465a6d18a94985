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


# ---- semantic-search metrics of sentence embeddings ----------------------------------------
# Five 2-D embeddings at angles 0°, 45°, 90°, 180°, 225° (cosine falls with the angle between
# them). Nearest OTHER sentence by hand: 0 → 1 (45°); 1 → 0 and 2 both at 45°, a tie: the
# lower index, 0; 2 → 1 (45°); 3 → 4 (45°); 4 → 3 (45°).
REF = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0], [-1.0, -1.0]])
REF_NN = [1, 0, 1, 4, 3]
# sentence 1 turned to 63.4° (towards 2): 1 → 2 now (26.6° vs 63.4°); 0 → 1 (63.4° < 90°)
# and 2 → 1 (26.6°) stay, 3 and 4 are unchanged: only sentence 1 disagrees
JUDGED = REF.copy()
JUDGED[1] = [1.0, 2.0]
JUDGED_NN = [1, 2, 1, 4, 3]


def _at_degrees(*angles):
    a = np.radians(angles)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_nearest_neighbours_by_hand_tie_to_lower_index():
    np.testing.assert_array_equal(M.nearest_neighbours(REF), REF_NN)
    np.testing.assert_array_equal(M.nearest_neighbours(JUDGED), JUDGED_NN)
    # cosine, not dot product: lengths do not matter (rows not in row 1's tie rescaled)
    np.testing.assert_array_equal(M.nearest_neighbours(REF * np.array([[1], [7], [1], [0.1], [30]])), REF_NN)
    # identical rows: every row ties with all others and takes the lowest other index
    np.testing.assert_array_equal(M.nearest_neighbours(np.ones((4, 3))), [1, 0, 0, 0])
    # itself is excluded even though it is its own most similar row
    assert all(i != j for i, j in enumerate(M.nearest_neighbours(REF)))


def test_neighbour_agreement_by_hand():
    assert M.neighbour_agreement(JUDGED, REF) == pytest.approx(0.8)  # 4 of 5 agree
    assert M.neighbour_agreement(REF, REF) == 1.0
    # had the tie of sentence 1 gone to the higher index (2), all five would agree
    assert M.neighbour_agreement(JUDGED, REF) != 1.0
    # another layout (angles 0°, 100°, 130°, 35°, 170°): nn 0→3, 1→2, 2→1, 3→0, 4→2
    far = _at_degrees(0, 100, 130, 35, 170)
    np.testing.assert_array_equal(M.nearest_neighbours(far), [3, 2, 1, 0, 2])
    assert M.neighbour_agreement(far, REF) == pytest.approx(1 / 5)  # only sentence 2 (→ 1) agrees


def test_pairwise_cosine_matches_rowwise_cosine():
    s = M.pairwise_cosine_similarity(JUDGED)
    i, j = np.triu_indices(5, 1)
    np.testing.assert_allclose(s[i, j], M.cosine_similarity(JUDGED[i], JUDGED[j]))
    np.testing.assert_allclose(s, s.T)


def test_similarity_spearman_monotone_transform_is_one():
    # angles in [0°, 180°): every pairwise cosine is cos(|Δθ|), all |Δθ| distinct; halving
    # the angles maps cos(Δ) to cos(Δ/2), an increasing function of it: same order of pairs
    ref = _at_degrees(0, 20, 55, 105, 170)
    judged = _at_degrees(0, 10, 27.5, 52.5, 85) * np.array([[2.0], [0.5], [1.0], [3.0], [1.0]])
    assert M.pairwise_similarity_spearman(judged, ref) == pytest.approx(1.0)
    assert M.pairwise_similarity_spearman(ref, ref) == pytest.approx(1.0)


def test_similarity_spearman_by_hand():
    # 3 sentences, pairs (0,1), (0,2), (1,2).
    # ref at 0°, 30°, 100°: cosines cos30, cos100, cos70 → ranks 3, 1, 2
    # judged at 0°, 60°, 100°: cos60, cos100, cos40 → ranks 2, 1, 3
    # ρ = 1 − 6 Σd² / (n(n² − 1)) = 1 − 6·2 / 24 = 0.5
    ref = _at_degrees(0, 30, 100)
    assert M.pairwise_similarity_spearman(_at_degrees(0, 60, 100), ref) == pytest.approx(0.5)
    # ties get average ranks: cosines 0, −1, 0 → ranks 2.5, 1, 2.5; Pearson with 3, 1, 2
    # = 1.5 / sqrt(1.5 · 2) = √3 / 2
    tied = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert M.pairwise_similarity_spearman(tied, ref) == pytest.approx(np.sqrt(3) / 2)
    # order of pairs reversed: −1
    assert M.pairwise_similarity_spearman(_at_degrees(0, 70, 30), _at_degrees(0, 30, 100)) == pytest.approx(-1.0)
    # all similarities equal: a rank correlation is undefined
    assert np.isnan(M.pairwise_similarity_spearman(np.ones((3, 2)), ref))


def test_embedding_task_metrics_dict_and_errors():
    out = M.embedding_task_metrics(JUDGED, REF)
    assert out.keys() == {"top1_neighbour_agreement", "similarity_spearman", "n_sentences"}
    assert out["top1_neighbour_agreement"] == pytest.approx(0.8) and out["n_sentences"] == 5
    assert out["similarity_spearman"] == pytest.approx(M.pairwise_similarity_spearman(JUDGED, REF))
    assert -1 <= out["similarity_spearman"] < 1
    for fn in (M.embedding_task_metrics, M.neighbour_agreement, M.pairwise_similarity_spearman):
        with pytest.raises(ValueError, match=r"at least 3 sentences.*\(2, 2\)"):
            fn(REF[:2], REF[:2])
        with pytest.raises(ValueError, match=r"\(5, 2\) vs \(4, 2\)"):
            fn(REF, REF[:4])
        with pytest.raises(ValueError, match=r"\(5, 2\) vs \(5, 3\)"):
            fn(REF, np.ones((5, 3)))
        with pytest.raises(ValueError, match=r"2-D.*\(5,\)"):
            fn(REF[:, 0], REF[:, 0])
        with pytest.raises(ValueError, match="NaN"):
            fn(np.where(JUDGED == 2.0, np.nan, JUDGED), REF)
    with pytest.raises(ValueError, match=r"at least 3 sentences.*\(2, 2\)"):
        M.nearest_neighbours(REF[:2])
