"""Unit tests for takemeter.evaluation, checked against numbers worked out by hand."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from backend.domain.taxonomy import parse_taxonomy
from takemeter.evaluate import annotator_labels
from takemeter.evaluation import (
    BCA,
    CLOPPER_PEARSON,
    EXACT_FALLBACK,
    FLEISS,
    KRIPPENDORFF,
    PAIRED_BCA,
    WILSON,
    Resampling,
    accuracy,
    accuracy_ci,
    bootstrap_ci,
    calibration_summary,
    cohen_kappa,
    compare_systems,
    confusion,
    evaluate_system,
    f1_intervals,
    fleiss_kappa,
    inter_annotator_agreement,
    krippendorff_alpha,
    macro_f1,
    mcnemar,
    paired_differences,
    proportion_ci,
    render_markdown,
    render_terminal,
    top_confusions,
    write_json,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --- small 3-label fixture --------------------------------------------------------
#   idx   0 1 2 3 4 5 6 7 8 9
#   true  A A A A B B B C C C
#   pred  A A A B B B C C C -
ABC = ["A", "B", "C"]
ABC_TRUE = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "C"]
ABC_PRED = ["A", "A", "A", "B", "B", "B", "C", "C", "C", None]

# --- 40-post fixture shaped like the real task -----------------------------------
SS, HC, PE = "seeking_support", "health_claim", "personal_experience"
LABELS = [SS, HC, PE]
HUMAN = [SS] * 20 + [HC] * 10 + [PE] * 10
# llm: posts 0-6 SS->PE (7 errors), 30-31 PE->HC (2 errors); 31 of 40 right.
LLM = [PE] * 7 + [SS] * 13 + [HC] * 10 + [HC] * 2 + [PE] * 8
# finetuned: posts 20-22 HC->PE (3 errors), post 30 no prediction; 36 of 40 right.
FINETUNED = [SS] * 20 + [PE] * 3 + [HC] * 7 + [None] + [PE] * 9
TEXTS = [f"post {i}" for i in range(40)]
# Double-annotated posts for the 2x2 kappa table used below.
ANNOTATOR_PAIRS = [("yes", "yes")] * 4 + [("yes", "no")] + [("no", "yes")] * 2 + [("no", "no")] * 3
# The same posts as compare_systems takes them: {annotator: label}, two annotators.
ANNOTATIONS = [{"ann": x, "bob": y} for x, y in ANNOTATOR_PAIRS]


def _report(n_resamples: int = 500) -> dict:
    return compare_systems(
        HUMAN,
        {"finetuned": FINETUNED, "llm": LLM},
        labels=LABELS,
        texts=TEXTS,
        annotations=ANNOTATIONS,
        n_resamples=n_resamples,
    )


def _paired(b: int, c: int, both_right: int = 3, both_wrong: int = 2):
    """Human labels and two systems with exactly b (A right, B wrong) and c (A wrong,
    B right) discordant posts."""
    y_true = ["x"] * (b + c + both_right + both_wrong)
    pred_a = ["x"] * b + ["y"] * c + ["x"] * both_right + ["y"] * both_wrong
    pred_b = ["y"] * b + ["x"] * c + ["x"] * both_right + ["y"] * both_wrong
    return y_true, pred_a, pred_b


# --------------------------------------------------------------------- accuracy/F1


def test_accuracy_counts_none_as_wrong():
    # Right at idx 0,1,2,4,5,7,8 -> 7 of 10; idx 9 (None) is wrong.
    assert accuracy(ABC_TRUE, ABC_PRED) == pytest.approx(7 / 10)


def test_accuracy_rejects_empty_and_mismatched_input():
    with pytest.raises(ValueError):
        accuracy([], [])
    with pytest.raises(ValueError):
        accuracy(["A"], ["A", "B"])


def test_macro_f1_three_labels_by_hand():
    # F1 = 2tp / (2tp + fp + fn)
    # A: tp=3 (0,1,2), fp=0, fn=1 (3->B)            -> 6/7
    # B: tp=2 (4,5), fp=1 (3), fn=1 (6->C)          -> 4/6 = 2/3
    # C: tp=2 (7,8), fp=1 (6), fn=1 (9 -> None)     -> 4/6 = 2/3
    # macro = (6/7 + 2/3 + 2/3) / 3 = (18 + 14 + 14) / 63 = 46/63
    assert macro_f1(ABC_TRUE, ABC_PRED, labels=ABC) == pytest.approx(46 / 63)


def test_macro_f1_unused_label_scores_zero():
    # Labels A, B, D; D never appears on either side -> F1_D = 0 (sklearn convention).
    # A: tp=1, fp=0, fn=1 -> 2/3; B: tp=1, fp=1, fn=0 -> 2/3; macro = (4/3) / 3 = 4/9
    assert macro_f1(["A", "A", "B"], ["A", "B", "B"], labels=["A", "B", "D"]) == (
        pytest.approx(4 / 9)
    )


def test_macro_f1_matches_sklearn_on_random_data():
    rng = random.Random(7)
    y_true = [rng.choice(ABC) for _ in range(200)]
    y_pred = [rng.choice([*ABC, None]) for _ in range(200)]
    filled = ["<none>" if p is None else p for p in y_pred]
    expected = f1_score(y_true, filled, labels=ABC, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels=ABC) == pytest.approx(expected)


# ------------------------------------------------------------------------- bootstrap


def test_all_right_gets_exact_intervals_not_a_degenerate_one():
    # Replaces an assertion of the old percentile bootstrap, which gave [1, 1] here.
    # Every resample of 30 right answers scores 1, so BCa is undefined (None) ...
    y = ["A", "B", "C"] * 10
    assert bootstrap_ci(y, y, metric=accuracy, n_resamples=300) is None
    res = evaluate_system(y, y, labels=ABC, texts=["t"] * 30, n_resamples=300)
    # ... accuracy is exact: Clopper-Pearson lower bound (0.025)^(1/30) = 0.884 ...
    assert res["accuracy_ci"] == pytest.approx([0.025 ** (1 / 30), 1.0])
    assert res["accuracy_ci_method"] == CLOPPER_PEARSON
    # ... and each label's F1 (10 of 10 posts involving it agree, J = 1) falls back to the
    # exact bound through J: J >= 0.025^(1/10) = 0.6915, F1 = 2J / (1 + J) >= 0.8176.
    j = 0.025 ** (1 / 10)
    assert res["per_label_ci"]["A"] == {
        "f1_ci": pytest.approx([2 * j / (1 + j), 1.0]),
        "f1_ci_method": EXACT_FALLBACK,
    }
    # macro-F1: Bonferroni over the 3 labels, each at 1 - 0.05/3.
    j3 = (0.05 / 3 / 2) ** (1 / 10)
    assert res["macro_f1_ci"] == pytest.approx([2 * j3 / (1 + j3), 1.0])
    assert res["macro_f1_ci_method"] == EXACT_FALLBACK


def test_bootstrap_half_right_width_matches_normal_approximation():
    # n=100 at p=0.5: SE = sqrt(0.5*0.5/100) = 0.05, so the 95% interval is about
    # 2 * 1.96 * 0.05 = 0.196 wide.
    y_true = ["A"] * 100
    y_pred = ["A"] * 50 + ["B"] * 50
    lo, hi = bootstrap_ci(y_true, y_pred, metric=accuracy, n_resamples=2000, seed=0)
    assert lo < 0.5 < hi
    assert abs((hi - lo) - 2 * 1.96 * 0.05) <= 0.04


def test_bootstrap_is_deterministic_per_seed():
    y_true = ["A"] * 60
    y_pred = ["A"] * 30 + ["B"] * 30
    first = bootstrap_ci(y_true, y_pred, metric=accuracy, n_resamples=200, seed=3)
    again = bootstrap_ci(y_true, y_pred, metric=accuracy, n_resamples=200, seed=3)
    other = bootstrap_ci(y_true, y_pred, metric=accuracy, n_resamples=200, seed=4)
    assert first == again
    assert first != other


def test_bootstrap_rejects_bad_confidence():
    with pytest.raises(ValueError):
        bootstrap_ci(["A"], ["A"], metric=accuracy, confidence=1.0)


# -------------------------------------------------------------------- exact intervals


@pytest.mark.parametrize(
    ("k", "n", "clopper_pearson", "wilson"),
    [
        # Small samples where the percentile bootstrap gave [0.848, 1.000] and [1, 1].
        (31, 33, (0.798, 0.993), (0.804, 0.983)),
        (30, 30, (0.884, 1.000), (0.886, 1.000)),
    ],
)
def test_proportion_intervals_match_scipy_binomtest(k, n, clopper_pearson, wilson):
    exact = stats.binomtest(k, n).proportion_ci(method="exact")
    score = stats.binomtest(k, n).proportion_ci(method="wilson")
    cp = proportion_ci(k, n)
    assert cp.method == CLOPPER_PEARSON
    assert (cp.low, cp.high) == pytest.approx((exact.low, exact.high))
    assert (round(cp.low, 3), round(cp.high, 3)) == clopper_pearson
    w = proportion_ci(k, n, method=WILSON)
    assert w.method == WILSON
    assert (w.low, w.high) == pytest.approx((score.low, score.high))
    assert (round(w.low, 3), round(w.high, 3)) == wilson


def test_accuracy_ci_is_clopper_pearson_of_right_answers():
    # 31 of 33 right, the last two wrong (one of them no answer).
    y_true = ["A"] * 33
    y_pred = ["A"] * 31 + ["B", None]
    low, high, method = accuracy_ci(y_true, y_pred)
    assert (round(low, 3), round(high, 3), method) == (0.798, 0.993, CLOPPER_PEARSON)
    report = compare_systems(y_true, {"s": y_pred}, labels=["A", "B"], texts=["t"] * 33)
    [row] = [r for r in render_terminal(report).splitlines() if r.startswith("accuracy")]
    assert row.split() == ["accuracy", "(Clopper-Pearson)", "0.939", "[0.798,", "0.993]"]


def test_proportion_ci_rejects_bad_input():
    with pytest.raises(ValueError):
        proportion_ci(1, 0)
    with pytest.raises(ValueError):
        proportion_ci(4, 3)
    with pytest.raises(ValueError):
        proportion_ci(1, 3, method="percentile")
    with pytest.raises(ValueError):
        proportion_ci(1, 3, confidence=1.0)


def test_f1_intervals_are_bca_and_hold_the_point_estimate():
    macro, per_label = f1_intervals(
        HUMAN, LLM, labels=LABELS, resampling=Resampling(n_resamples=500)
    )
    assert macro.method == BCA
    assert macro.low < macro_f1(HUMAN, LLM, labels=LABELS) < macro.high
    f1 = evaluate_system(HUMAN, LLM, labels=LABELS, texts=TEXTS, n_resamples=500)["per_label"]
    for label, interval in per_label.items():
        assert interval.method == BCA
        assert interval.low <= f1[label]["f1"] <= interval.high


def test_f1_interval_of_an_unused_label_is_none():
    # D: no post has it, none gets it: nothing to estimate (its F1 is 0 by convention).
    _, per_label = f1_intervals(["A", "B", "A"], ["A", "B", "B"], labels=["A", "B", "D"])
    assert per_label["D"] is None


# ---------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_small_discordance():
    # b=1, c=6, b+c=7 < 25 -> exact two-sided binomial:
    # p = 2 * sum_{k<=1} C(7,k) / 2^7 = 2 * (1 + 7) / 128 = 16/128 = 0.125
    result = mcnemar(*_paired(b=1, c=6))
    assert result["b"] == 1 and result["c"] == 6
    assert result["method"] == "exact"
    assert result["statistic"] == 1.0  # min(b, c)
    assert result["p_value"] == pytest.approx(0.125)


def test_mcnemar_chi2_with_continuity_correction():
    # b=10, c=20, b+c=30 >= 25 -> chi2 = (|10-20| - 1)^2 / 30 = 81/30 = 2.7
    # p = P(chi2_1 > 2.7) = 2 * (1 - Phi(sqrt(2.7) = 1.643)) ~= 0.1003
    result = mcnemar(*_paired(b=10, c=20))
    assert (result["b"], result["c"]) == (10, 20)
    assert result["method"] == "chi2-corrected"
    assert result["statistic"] == pytest.approx(2.7)
    assert result["p_value"] == pytest.approx(0.1003, abs=1e-4)


def test_mcnemar_switches_method_at_25_discordant():
    assert mcnemar(*_paired(b=12, c=12))["method"] == "exact"  # 24
    assert mcnemar(*_paired(b=12, c=13))["method"] == "chi2-corrected"  # 25


def test_mcnemar_no_discordance_has_p_one():
    result = mcnemar(*_paired(b=0, c=0))
    assert (result["b"], result["c"], result["p_value"]) == (0, 0, 1.0)


def test_mcnemar_none_prediction_is_wrong():
    # Post 0: A right, B gave nothing -> b=1. Post 1: both right.
    result = mcnemar(["x", "x"], ["x", "x"], [None, "x"])
    assert (result["b"], result["c"]) == (1, 0)


@pytest.mark.parametrize(
    ("b", "c"), [(1, 6), (0, 0), (0, 9), (12, 12), (12, 13), (10, 20), (30, 5)]
)
def test_mcnemar_matches_statsmodels(b, c):
    # The 2x2 table of (A right?, B right?) counts; exact below 25 discordant posts.
    both_right, both_wrong = 3, 2
    expected = statsmodels_mcnemar(
        [[both_right, b], [c, both_wrong]], exact=b + c < 25, correction=True
    )
    result = mcnemar(*_paired(b=b, c=c, both_right=both_right, both_wrong=both_wrong))
    assert result["p_value"] == pytest.approx(float(expected.pvalue))
    assert result["statistic"] == pytest.approx(float(expected.statistic))


def test_mcnemar_equal_discordance_in_chi2_regime_has_p_one():
    # statsmodels' corrected chi2 gives (|15 - 15| - 1)^2 / 30 = 1/30 here (p = 0.855):
    # the correction overshoots when b == c, which is no evidence either way.
    result = mcnemar(*_paired(b=15, c=15))
    assert (result["method"], result["statistic"], result["p_value"]) == ("chi2-corrected", 0, 1)


# ---------------------------------------------------------------------- paired differences


def _strictly_better() -> tuple[list[str], list[str], list[str]]:
    """60 posts; A errs on 6 of them, B on the same 6 and 12 more: A is better."""
    y_true = ["A"] * 20 + ["B"] * 20 + ["C"] * 20
    shift = {"A": "B", "B": "C", "C": "A"}
    pred_a = [shift[t] if i % 20 < 2 else t for i, t in enumerate(y_true)]
    pred_b = [shift[t] if i % 20 < 6 else t for i, t in enumerate(y_true)]
    return y_true, pred_a, pred_b


def test_paired_difference_interval_when_one_system_is_strictly_better():
    y_true, pred_a, pred_b = _strictly_better()
    assert (accuracy(y_true, pred_a), accuracy(y_true, pred_b)) == (0.9, 0.7)
    diffs = paired_differences(y_true, pred_a, pred_b, labels=ABC)
    difference, interval = diffs["accuracy"]
    assert difference == pytest.approx(0.2)
    assert interval.method == PAIRED_BCA
    # b = 12, c = 0: the difference is 12/60 times Bin(60, 0.2)/12, SE = sqrt(.2*.8/60)
    # = 0.0516, so the interval is about 2 * 1.96 * 0.0516 = 0.202 wide, clear of 0.
    assert 0 < interval.low < 0.2 < interval.high
    assert abs((interval.high - interval.low) - 2 * 1.96 * math.sqrt(0.2 * 0.8 / 60)) < 0.04
    f1_difference, f1_interval = diffs["macro_f1"]
    assert f1_interval.method == PAIRED_BCA
    assert 0 < f1_interval.low < f1_difference < f1_interval.high
    # The separate intervals overlap, yet the paired comparison settles it.
    a, b = accuracy_ci(y_true, pred_a), accuracy_ci(y_true, pred_b)
    assert a.low < b.high
    report = compare_systems(
        y_true, {"a": pred_a, "b": pred_b}, labels=ABC, texts=["t"] * 60, n_resamples=500
    )
    [pair] = report["paired"]
    assert (pair["better"], pair["verdict"]) == ("a", "a is better than b")
    assert report["mcnemar"][0]["p_value"] == pytest.approx(2 / 2**12)
    [wide] = [w for w in report["warnings"] if "intervals are wide" in w]
    assert "a is better than b (a \u2212 b accuracy +0.200 [" in wide
    assert "McNemar exact p = 0.000488" in wide


def test_paired_difference_of_identical_systems_falls_back_to_exact_bound():
    # No discordant post: every resample's difference is 0, BCa is undefined. The exact
    # bound: |difference| <= P(discordant) <= Clopper-Pearson upper of 0 of 30 at
    # 1 - 0.05/2, i.e. 1 - 0.0125^(1/30) = 0.136.
    y = ["A", "B", "C"] * 10
    pred = ["A", "B", "B"] * 10
    difference, interval = paired_differences(y, pred, list(pred), labels=ABC)["accuracy"]
    bound = 1 - 0.0125 ** (1 / 30)
    assert difference == 0
    assert (interval.low, interval.high) == pytest.approx((-bound, bound))
    assert round(bound, 3) == 0.136
    assert interval.method == EXACT_FALLBACK


# ------------------------------------------------------------------------------ kappa


def test_cohen_kappa_two_by_two_by_hand():
    #                 rater b
    #               yes   no
    # rater a yes    4     1     (5)
    #         no     2     3     (5)
    #               (6)   (4)    n=10
    # po = (4 + 3) / 10 = 0.7
    # pe = 0.5*0.6 + 0.5*0.4 = 0.30 + 0.20 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = [x for x, _ in ANNOTATOR_PAIRS]
    b = [y for _, y in ANNOTATOR_PAIRS]
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_undefined_cases_return_none():
    assert cohen_kappa(["A"], ["A"]) is None  # fewer than 2 items
    assert cohen_kappa(["A", "A", "A"], ["A", "A", "A"]) is None  # pe = 1 -> 0/0


# Fleiss (1971) as on Wikipedia's "Fleiss' kappa": 10 subjects, 14 raters each,
# counts per category 1..5. kappa = (0.378 - 0.213) / (1 - 0.213) = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
FLEISS_RATINGS = [
    [f"c{j + 1}" for j, count in enumerate(row) for _ in range(count)] for row in FLEISS_TABLE
]
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example:
# observers A-D on 12 units, some missing (None); published alpha = 0.743.
KRIPPENDORFF_OBSERVERS = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}
KRIPPENDORFF_UNITS = [
    {who: str(values[u]) for who, values in KRIPPENDORFF_OBSERVERS.items() if values[u]}
    for u in range(12)
]


def test_fleiss_kappa_published_example():
    assert round(fleiss_kappa(FLEISS_RATINGS), 3) == 0.210
    # As annotations: 14 different annotators per post, so Fleiss' kappa, not Cohen's.
    agreement = inter_annotator_agreement(
        [{f"r{i}": label for i, label in enumerate(row)} for row in FLEISS_RATINGS]
    )
    assert agreement["statistic"] == FLEISS
    assert round(agreement["value"], 3) == 0.210
    assert (agreement["n_posts"], agreement["n_annotators"]) == (10, 14)
    assert agreement["n_pairs"] == 10 * 91  # C(14, 2) per post


def test_fleiss_kappa_needs_equal_counts_and_two_labels():
    with pytest.raises(ValueError):
        fleiss_kappa([["a", "b"], ["a", "b", "b"]])
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) is None


def test_krippendorff_alpha_published_example():
    units = [list(u.values()) for u in KRIPPENDORFF_UNITS]
    assert round(krippendorff_alpha(units), 3) == 0.743
    # Two to four annotators per post: only Krippendorff's alpha takes that.
    agreement = inter_annotator_agreement(KRIPPENDORFF_UNITS)
    assert agreement["statistic"] == KRIPPENDORFF
    assert round(agreement["value"], 3) == 0.743
    assert agreement["n_posts"] == 11  # unit 12 has a single value: nothing to agree on


def test_agreement_is_cohen_for_exactly_two_annotators_only():
    agreement = inter_annotator_agreement(ANNOTATIONS)
    assert (agreement["statistic"], agreement["n_annotators"]) == ("Cohen's kappa", 2)
    assert agreement["value"] == pytest.approx(0.4)
    # Three annotators in pairs: pooling the pairs into one Cohen's kappa mixed raters.
    mixed = [{"ann": "yes", "bob": "yes"}, {"ann": "no", "cy": "yes"}, {"bob": "no", "cy": "no"}]
    assert inter_annotator_agreement(mixed)["statistic"] == FLEISS


def test_annotator_labels_keep_who_labeled_what():
    taxonomy = parse_taxonomy(Path("label_config.xml").read_text(encoding="utf-8"))

    def annotation(user, label, when, *, skipped=False):
        result = [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        return {
            "completed_by": user,
            "result": result,
            "updated_at": when,
            "was_cancelled": skipped,
        }

    tasks = [
        {
            "id": 1,
            "annotations": [
                annotation(1, SS, "2024-01-01T00:00:00"),
                annotation(2, PE, "2024-01-01T00:00:00"),
                annotation(2, HC, "2024-01-02T00:00:00"),  # user 2's latest wins
                annotation(3, SS, "2024-01-03T00:00:00", skipped=True),
            ],
        },
        {"id": 2, "annotations": [annotation(1, SS, "2024-01-01T00:00:00")]},  # one only
        {
            "id": 3,
            "annotations": [
                annotation(1, SS, "2024-01-01T00:00:00"),
                annotation(2, SS, "2024-01-01T00:00:00"),
            ],
        },  # not held out
    ]
    assert annotator_labels(tasks, taxonomy, {1, 2}) == [{1: SS, 2: HC}]


# -------------------------------------------------------------------------- confusion


def test_confusion_adds_none_column_only_when_needed():
    y_true = ["A", "A", "B", "B", "C"]
    y_pred = ["A", None, "A", "B", None]
    # columns A, B, C, (none)
    assert confusion(y_true, y_pred, labels=ABC) == [
        [1, 0, 0, 1],  # A: 1 right, 1 no prediction
        [1, 1, 0, 0],  # B: 1 read as A, 1 right
        [0, 0, 0, 1],  # C: 1 no prediction
    ]
    assert confusion(["A", "B"], ["B", "B"], labels=ABC) == [
        [0, 1, 0],
        [0, 1, 0],
        [0, 0, 0],
    ]


def test_confusion_rejects_unknown_prediction():
    with pytest.raises(ValueError, match="predictions not in labels"):
        confusion(["A"], ["Z"], labels=ABC)


# --------------------------------------------------------------------- top confusions


def test_top_confusions_order_counts_and_examples():
    result = top_confusions(HUMAN, LLM, texts=TEXTS, k=5, examples=3)
    # llm errors: SS->PE at posts 0-6 (7 of 20 SS), PE->HC at posts 30-31 (2 of 10 PE)
    assert [(r["human"], r["predicted"], r["count"]) for r in result] == [
        (SS, PE, 7),
        (PE, HC, 2),
    ]
    assert result[0]["share_of_human_label"] == pytest.approx(7 / 20)
    assert result[0]["examples"] == ["post 0", "post 1", "post 2"]  # first three
    assert result[1]["share_of_human_label"] == pytest.approx(2 / 10)
    assert result[1]["examples"] == ["post 30", "post 31"]


def test_top_confusions_k_truncation_and_none_predictions():
    y_true = ["A", "A", "A", "B", "B", "C"]
    y_pred = ["B", "B", None, "C", "A", None]
    long_text = "x" * 500
    texts = [long_text, "t1", "t2", "t3", "t4", "t5"]
    result = top_confusions(y_true, y_pred, texts=texts, k=2, examples=1)
    # A->B twice comes first; then the singletons sorted by human label with
    # no-prediction last among equals: (A, None) before (B, A) alphabetically.
    assert [(r["human"], r["predicted"], r["count"]) for r in result] == [
        ("A", "B", 2),
        ("A", None, 1),
    ]
    example = result[0]["examples"][0]
    assert len(example) == 200 and example.startswith("x" * 199)
    assert len(top_confusions(y_true, y_pred, texts=texts, k=None)) == 5


# ------------------------------------------------------------------------ evaluation


def test_evaluate_system_numbers():
    res = evaluate_system(HUMAN, FINETUNED, labels=LABELS, texts=TEXTS, n_resamples=300)
    assert res["n"] == 40
    assert res["coverage"] == pytest.approx(39 / 40)
    assert res["accuracy"] == pytest.approx(36 / 40)
    lo, hi = res["accuracy_ci"]
    assert lo <= 0.9 <= hi
    # HC: tp=7, fp=0, fn=3 -> P=1, R=0.7, F1 = 14/17
    assert res["per_label"][HC] == pytest.approx(
        {"precision": 1.0, "recall": 0.7, "f1": 14 / 17, "support": 10}
    )
    # PE: tp=9, fp=3 (posts 20-22), fn=1 (post 30) -> F1 = 18/22 = 9/11
    assert res["per_label"][PE]["f1"] == pytest.approx(9 / 11)
    # macro = (1 + 14/17 + 9/11) / 3
    assert res["macro_f1"] == pytest.approx((1 + 14 / 17 + 9 / 11) / 3)
    assert res["confusion"]["columns"] == [*LABELS, "(none)"]
    assert res["confusion"]["matrix"] == [[20, 0, 0, 0], [0, 7, 3, 0], [0, 0, 9, 1]]


def test_compare_systems_mcnemar_and_kappa():
    report = _report()
    [pair] = report["mcnemar"]
    assert (pair["system_a"], pair["system_b"]) == ("finetuned", "llm")
    # b = finetuned right & llm wrong: posts 0-6 and 31 -> 8
    # c = finetuned wrong & llm right: posts 20-22 -> 3 (post 30 both wrong)
    # exact: p = 2 * sum_{k<=3} C(11,k) / 2^11 = 2 * (1+11+55+165) / 2048 = 464/2048
    assert (pair["b"], pair["c"], pair["method"]) == (8, 3, "exact")
    assert pair["p_value"] == pytest.approx(464 / 2048)
    # llm vs human: po = 31/40 = 0.775
    # marginals human SS/HC/PE = 20/10/10, llm = 13/12/15
    # pe = (20*13 + 10*12 + 10*15) / 40^2 = 530/1600 = 0.33125
    # kappa = (0.775 - 0.33125) / (1 - 0.33125) = 0.44375 / 0.66875 = 71/107
    assert report["kappa_vs_human"]["llm"] == pytest.approx(71 / 107)
    assert report["inter_annotator_kappa"] == pytest.approx(0.4)
    assert report["n_annotator_pairs"] == 10


def test_compare_systems_findings_sentences():
    # Confusions with count >= 2, most frequent first across systems; finetuned's
    # single missing prediction (count 1) is not a finding.
    assert _report()["findings"] == [
        "llm reads seeking_support as personal_experience in 7 of 20 seeking_support posts (35%)",
        "finetuned reads health_claim as personal_experience in 3 of 10 health_claim posts (30%)",
        "llm reads personal_experience as health_claim in 2 of 10 personal_experience posts (20%)",
    ]


def test_compare_systems_small_n_warning_gives_interval_width():
    report = _report()
    widths = {
        name: res["accuracy_ci"][1] - res["accuracy_ci"][0]
        for name, res in report["systems"].items()
    }
    [wide] = [w for w in report["warnings"] if "intervals are wide" in w]
    assert wide.startswith("Only 40 held-out posts: the 95% intervals are wide")
    assert "not evidence" in wide
    for name, width in widths.items():
        assert f"{name} {width:.2f}" in wide
    assert any("finetuned gave no prediction for 1 of 40" in w for w in report["warnings"])


def test_compare_systems_small_n_warning_judges_by_the_paired_comparison():
    report = _report()
    [wide] = [w for w in report["warnings"] if "intervals are wide" in w]
    # finetuned 36/40 vs llm 31/40, b = 8, c = 3: McNemar p = 0.227 and the paired
    # interval of the difference includes 0, so neither is shown better.
    [pair] = report["paired"]
    low, high = pair["accuracy_difference_ci"]
    assert low < 0 < high and pair["accuracy_difference_ci_method"] == PAIRED_BCA
    assert pair["accuracy_difference"] == pytest.approx(5 / 40)
    assert (pair["better"], pair["verdict"]) == (
        None,
        "not evidence that finetuned or llm is better",
    )
    assert "judge differences by the paired comparison on the same posts" in wide
    assert "McNemar exact p = 0.227" in wide and "paired BCa bootstrap" in wide
    assert "smaller than about" not in wide  # the old widest-interval rule


def test_compare_systems_no_small_n_warning_at_100_or_more():
    report = compare_systems(
        HUMAN * 3,
        {"llm": LLM * 3},
        labels=LABELS,
        texts=TEXTS * 3,
        n_resamples=100,
    )
    assert not any("intervals are wide" in w for w in report["warnings"])
    assert report["mcnemar"] == []
    assert report["inter_annotator_kappa"] is None


def test_compare_systems_rejects_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        compare_systems(HUMAN, {"llm": LLM[:-1]}, labels=LABELS, texts=TEXTS)


# ------------------------------------------------------------------------- rendering


def test_render_terminal_contains_all_sections():
    report = _report()
    text = render_terminal(report)
    header = next(line for line in text.splitlines() if "finetuned" in line)
    assert "llm" in header
    acc = report["systems"]["llm"]
    assert f"{acc['accuracy']:.3f} [{acc['accuracy_ci'][0]:.3f}, " in text
    assert "macro-F1" in text and "coverage" in text and "97.5%" in text
    assert f"F1 {SS} (n=20)" in text
    assert "McNemar finetuned vs llm" in text and "p = 0.227" in text
    assert "Inter-annotator kappa: 0.400" in text
    for sentence in report["findings"] + report["warnings"]:
        assert sentence in text


def test_render_terminal_names_interval_methods_and_paired_results():
    report = _report()
    text = render_terminal(report)
    assert "Clopper-Pearson (exact) for accuracy and coverage" in text
    assert "accuracy (Clopper-Pearson)" in text and "macro-F1 (BCa bootstrap)" in text
    assert "coverage (Clopper-Pearson)" in text
    pair = report["paired"][0]
    low, high = pair["macro_f1_difference_ci"]
    assert (
        f"finetuned \u2212 llm macro-F1: {pair['macro_f1_difference']:+.3f} "
        f"[{low:+.3f}, {high:+.3f}] (paired BCa bootstrap)"
    ) in text
    assert "\u2192 not evidence that finetuned or llm is better" in text
    assert "Inter-annotator kappa: 0.400 (Cohen's kappa; 2 annotators, 10 posts" in text
    # finetuned gets all 20 seeking_support posts right and reads no other post as one:
    # every resample scores F1 = 1, so BCa is undefined and the cell carries the exact
    # bound (J >= 0.025^(1/20)), marked with a dagger that a note explains.
    j = 0.025 ** (1 / 20)
    cell = report["systems"]["finetuned"]["per_label_ci"][SS]
    assert cell == {"f1_ci": pytest.approx([2 * j / (1 + j), 1.0]), "f1_ci_method": EXACT_FALLBACK}
    assert f"1.000 [{2 * j / (1 + j):.3f}, 1.000]\u2020" in text
    assert "\u2020 BCa undefined here" in text


def test_render_markdown_writes_report_and_pngs(tmp_path: Path):
    report = _report()
    out_dir = tmp_path / "eval"
    md_path = render_markdown(report, out_dir=out_dir, title="Test run")
    assert md_path == out_dir / "report.md"
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Test run")
    for name in ("finetuned", "llm"):
        png = out_dir / f"confusion_{name}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert f"](confusion_{name}.png)" in md
    for section in ("## Summary", "McNemar", "kappa", "## Findings", "## Warnings"):
        assert section in md
    # Example posts of the top llm confusion are quoted.
    assert "> post 0" in md and "> post 6" not in md  # only the first 3 examples


def test_write_json_round_trip_and_numpy_conversion(tmp_path: Path):
    report = _report()
    path = tmp_path / "out" / "report.json"
    write_json(report, path)
    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp left

    write_json(
        {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(2), "nan": math.nan},
        path,
    )
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "i": 3,
        "f": 0.5,
        "a": [0, 1],
        "nan": None,
    }


# ------------------------------------------------------------------ score calibration


def test_calibration_summary_by_hand():
    right = [False, False, True, True]
    cal = calibration_summary({"fitted": [0.1, 0.2, 0.8, 0.9], "flat": [0.5] * 4}, right)
    assert (cal["n"], cal["n_right"], cal["share_right"], cal["bins"]) == (4, 2, 0.5, 10)
    assert cal["brier_constant"] == pytest.approx(0.25)  # always 0.5: 0.5 * (1 - 0.5)
    fitted, flat = cal["scores"]["fitted"], cal["scores"]["flat"]
    assert fitted["brier"] == pytest.approx(0.025) and fitted["ece"] == pytest.approx(0.15)
    assert flat["brier"] == pytest.approx(0.25) and flat["ece"] == pytest.approx(0.0)
    assert fitted["mean_score"] == pytest.approx(0.5)
    assert [b["n"] for b in flat["reliability"]] == [0] * 5 + [4] + [0] * 4
    with pytest.raises(ValueError, match="differ in length"):
        calibration_summary({"fitted": [0.1]}, right)
    with pytest.raises(ValueError):
        calibration_summary({}, right)


def _report_with_calibration() -> dict:
    report = _report()
    report["calibration"] = {
        **calibration_summary(
            {"project's calibrator": [0.15, 0.15, 0.95, 0.95], "prior": [0.3, 0.3, 0.7, 0.9]},
            [False, True, True, True],
        ),
        "notes": ["score source: prior"],
    }
    return report


def test_render_terminal_reports_brier_ece_and_the_reliability_bins():
    text = render_terminal(_report_with_calibration())
    assert "Score calibration:" in text
    assert "on 4 posts with a pre-label (3 right, 75.0%)" in text
    # Brier (0.15^2 + 0.85^2 + 0.05^2 + 0.05^2) / 4 = 0.1875; ECE 0.35/2 + 0.05/2 = 0.2
    assert "project's calibrator: Brier 0.188, ECE 0.200 (10 bins)" in text
    assert "score 0.1-0.2: 2 posts, mean score 0.15, right 50%" in text
    assert "score source: prior" in text
    assert "Score calibration" not in render_terminal(_report())


def test_render_markdown_draws_the_reliability_diagram(tmp_path: Path):
    md = render_markdown(_report_with_calibration(), out_dir=tmp_path).read_text()
    assert (tmp_path / "reliability.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "## Score calibration" in md and "](reliability.png)" in md
    assert "| 0.1-0.2 | 2, 0.15, 50% | 0 |" in md
    assert "| 0.9-1.0 | 2, 0.95, 100% | 1, 0.90, 100% |" in md
    render_markdown(_report(), out_dir=tmp_path / "without")
    assert not (tmp_path / "without" / "reliability.png").exists()
