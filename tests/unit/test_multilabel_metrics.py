"""Unit tests for takemeter.evaluation.multilabel, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from takemeter.evaluation import compare_sets, render_sets
from takemeter.evaluation.multilabel import (
    POST_BOUND_FALLBACK,
    hamming_loss,
    indicator,
    intervals,
    macro_f1,
    micro_f1,
    paired_subset_comparison,
    per_label,
    subset_accuracy,
)
from takemeter.evaluation.statistics import (
    BCA,
    CLOPPER_PEARSON,
    EXACT_FALLBACK,
    Resampling,
    bootstrap_ci,
    proportion_ci,
)

# Few resamples: the tests check the machinery, not the intervals' precision.
FAST = Resampling(n_resamples=300, seed=3)

# --- hand example: 4 posts, labels a b c d (d is an option nobody uses) --------------
#   post  truth    pred     truth a b c d   pred a b c d
#   0     {a, b}   {a}            1 1 0 0        1 0 0 0
#   1     {c}      {c}            0 0 1 0        0 0 1 0
#   2     {}       {b}            0 0 0 0        0 1 0 0
#   3     {a}      None           1 0 0 0        0 0 0 0   (None predicts no label)
#
#   label  TP FP FN  precision  recall  F1               support  predicted
#   a      1  0  1   1/1        1/2     2*1/(2+0+1)=2/3  2        1
#   b      0  1  1   0/1        0/1     0/(0+1+1)=0      1        1
#   c      1  0  0   1          1       1                1        1
#   d      0  0  0   0/0=None   None    None             0        0
#
#   micro-F1 = 2*2 / (2*2 + 1 + 2) = 4/7
#   macro-F1 = mean over a, b, c (d unused, left out) = (2/3 + 0 + 1) / 3 = 5/9
#   Hamming loss = wrong cells (0b, 2b, 3a) / (4 posts * 4 labels) = 3/16
#   subset accuracy = only post 1 exactly right = 1/4
LABELS = ["a", "b", "c", "d"]
TRUTH = [{"a", "b"}, {"c"}, set(), {"a"}]
PRED: list[frozenset[str] | None] = [frozenset({"a"}), frozenset({"c"}), frozenset({"b"}), None]
TRUTH_MATRIX = [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
PRED_MATRIX = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def _random_example(n: int = 60, seed: int = 7) -> tuple[list, list, list[str]]:
    """Truth with each of 4 labels on ~40% of posts; predictions flip ~20% of decisions
    and give no answer on a few posts that have a label (so sklearn, which cannot tell
    None from the empty set, agrees on subset accuracy too)."""
    labels = ["w", "x", "y", "z"]
    rng = np.random.default_rng(seed)
    t = rng.random((n, len(labels))) < 0.4
    p = t ^ (rng.random(t.shape) < 0.2)
    truth = [{lab for lab, on in zip(labels, row, strict=True) if on} for row in t]
    pred: list = [frozenset(lab for lab, on in zip(labels, row, strict=True) if on) for row in p]
    for i in [i for i in range(n) if truth[i]][:3]:
        pred[i] = None
    return truth, pred, labels


def test_indicator_matches_hand_matrices() -> None:
    assert indicator(TRUTH, LABELS).tolist() == TRUTH_MATRIX
    assert indicator(PRED, LABELS).tolist() == PRED_MATRIX
    assert indicator([{"c", "a"}], ["c", "a", "b"]).tolist() == [[1, 1, 0]]  # labels' order


def test_metrics_match_hand_example() -> None:
    assert subset_accuracy(TRUTH, PRED) == pytest.approx(1 / 4)
    assert hamming_loss(TRUTH, PRED, LABELS) == pytest.approx(3 / 16)
    assert micro_f1(TRUTH, PRED, LABELS) == pytest.approx(4 / 7)
    assert macro_f1(TRUTH, PRED, LABELS) == pytest.approx(5 / 9)


def test_per_label_matches_hand_table() -> None:
    table = per_label(TRUTH, PRED, LABELS)
    assert list(table) == LABELS
    expected = {
        "a": (1.0, 0.5, 2 / 3, 2, 1),
        "b": (0.0, 0.0, 0.0, 1, 1),
        "c": (1.0, 1.0, 1.0, 1, 1),
        "d": (None, None, None, 0, 0),
    }
    for label, (precision, recall, f1, support, predicted) in expected.items():
        row = table[label]
        assert row["precision"] == (precision if precision is None else pytest.approx(precision))
        assert row["recall"] == (recall if recall is None else pytest.approx(recall))
        assert row["f1"] == (f1 if f1 is None else pytest.approx(f1))
        assert (row["support"], row["predicted"]) == (support, predicted)


def test_per_label_precision_undefined_when_never_predicted() -> None:
    # Label a: 1 true post, never predicted: recall 0/1 = 0, precision 0/0, F1 0/(0+0+1) = 0.
    row = per_label([{"a"}], [None], ["a"])["a"]
    assert (row["precision"], row["recall"], row["f1"]) == (None, 0.0, 0.0)


def test_macro_f1_leaves_out_unused_labels() -> None:
    # sklearn scores the unused label d as zero_division: 0 gives (2/3 + 0 + 1 + 0) / 4 =
    # 5/12, 1 gives (2/3 + 0 + 1 + 1) / 4 = 2/3; the convention here leaves d out: 5/9.
    t, p = indicator(TRUTH, LABELS), indicator(PRED, LABELS)
    assert skm.f1_score(t, p, average="macro", zero_division=0) == pytest.approx(5 / 12)
    assert skm.f1_score(t, p, average="macro", zero_division=1) == pytest.approx(2 / 3)
    assert macro_f1(TRUTH, PRED, LABELS) == pytest.approx(5 / 9)
    # An unused option leaves macro-F1 alone but adds right decisions to Hamming loss.
    assert macro_f1(TRUTH, PRED, [*LABELS, "e"]) == pytest.approx(5 / 9)
    assert hamming_loss(TRUTH, PRED, [*LABELS, "e"]) == pytest.approx(3 / 20)


def test_none_prediction_is_no_label_but_a_wrong_subset() -> None:
    # Truth {} for both posts: None and the empty set agree on every label decision,
    # but only the empty set is a right answer.
    assert subset_accuracy([set(), set()], [None, frozenset()]) == 0.5
    assert hamming_loss([set(), set()], [None, frozenset()], ["a"]) == 0.0
    # Nothing true and nothing predicted: F1 is 0/0 everywhere.
    assert micro_f1([set()], [None], ["a"]) is None
    assert macro_f1([set()], [None], ["a"]) is None
    # Truth {a}, no answer: a is a false negative, so micro-F1 = 0 / (0 + 0 + 1) = 0.
    assert micro_f1([{"a"}], [None], ["a", "b"]) == 0.0
    assert hamming_loss([{"a"}], [None], ["a", "b"]) == 0.5


def test_agrees_with_sklearn_where_conventions_coincide() -> None:
    truth, pred, labels = _random_example()
    t, p = indicator(truth, labels), indicator(pred, labels)
    # The conventions coincide only if every label is used and None sits on labeled posts.
    assert t.sum(axis=0).min() > 0
    assert all(truth[i] for i, x in enumerate(pred) if x is None)
    assert micro_f1(truth, pred, labels) == pytest.approx(
        skm.f1_score(t, p, average="micro", zero_division=0)
    )
    assert macro_f1(truth, pred, labels) == pytest.approx(
        skm.f1_score(t, p, average="macro", zero_division=0)
    )
    assert hamming_loss(truth, pred, labels) == pytest.approx(skm.hamming_loss(t, p))
    assert subset_accuracy(truth, pred) == pytest.approx(skm.accuracy_score(t, p))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        t, p, average=None, zero_division=0
    )
    table = per_label(truth, pred, labels)
    assert [table[lab]["precision"] for lab in labels] == pytest.approx(list(precision))
    assert [table[lab]["recall"] for lab in labels] == pytest.approx(list(recall))
    assert [table[lab]["f1"] for lab in labels] == pytest.approx(list(f1))
    assert [table[lab]["support"] for lab in labels] == list(support)
    assert [table[lab]["predicted"] for lab in labels] == p.sum(axis=0).tolist()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: subset_accuracy([{"a"}], [None, None]), "differ in length"),
        (lambda: micro_f1([{"a"}, {"a"}], [None], ["a"]), "differ in length"),
        (lambda: paired_subset_comparison([{"a"}], [None], []), "differ in length"),
        (lambda: subset_accuracy([], []), "at least one"),
        (lambda: hamming_loss([], [], ["a"]), "at least one"),
        (lambda: indicator([], ["a"]), "at least one"),
        (lambda: per_label([{"a"}], [frozenset({"b"})], ["a"]), r"pred has labels not in .*'b'"),
        (lambda: macro_f1([{"q"}], [None], ["a"]), r"truth has labels not in .*'q'"),
        (lambda: indicator([{"a"}], ["a", "a"]), "duplicates"),
        (lambda: intervals([{"a"}], [None], ["a", "b", "a"]), "duplicates"),
        (lambda: intervals([{"a"}], [None], []), "must not be empty"),
        (lambda: hamming_loss(["ab"], [None], ["a", "b"]), "string"),  # type: ignore[list-item]
        (lambda: subset_accuracy([{"a"}], ["a"]), "string"),  # type: ignore[list-item]
    ],
)
def test_bad_input_raises(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _check_ordered(estimate: tuple) -> None:
    value, interval = estimate
    assert interval.low <= value <= interval.high
    assert interval.low >= 0.0 and interval.high <= 1.0


def test_intervals_hold_the_point_estimates() -> None:
    truth, pred, labels = _random_example()
    result = intervals(truth, pred, labels, resampling=FAST)
    assert result["micro_f1"][0] == pytest.approx(micro_f1(truth, pred, labels))
    assert result["macro_f1"][0] == pytest.approx(macro_f1(truth, pred, labels))
    assert result["hamming_loss"][0] == pytest.approx(hamming_loss(truth, pred, labels))
    for name in ("micro_f1", "macro_f1", "hamming_loss"):
        _check_ordered(result[name])
        assert result[name][1].method == BCA
        assert result[name][1].low < result[name][1].high  # 60 noisy posts: some spread
    table = per_label(truth, pred, labels)
    for label in labels:
        _check_ordered(result["per_label_f1"][label])
        assert result["per_label_f1"][label][0] == pytest.approx(table[label]["f1"])
    # Subset accuracy is a binomial share of posts: exactly statistics.proportion_ci.
    value, interval = result["subset_accuracy"]
    assert value == pytest.approx(subset_accuracy(truth, pred))
    right = round(value * len(truth))
    assert interval == proportion_ci(right, len(truth))
    assert interval.method == CLOPPER_PEARSON
    _check_ordered(result["subset_accuracy"])
    # A fixed seed gives the same intervals.
    assert intervals(truth, pred, labels, resampling=FAST) == result


def test_bootstrap_matches_resampling_the_posts_one_by_one() -> None:
    # The vectorised statistic (post weights times per-post counts) must score each
    # resample as the plain functions do; statistics.bootstrap_ci resamples the same
    # posts from the same seed and calls the metric on each resample's lists.
    truth, pred, labels = _random_example(n=30, seed=11)
    result = intervals(truth, pred, labels, resampling=FAST)
    plain = {
        "micro_f1": lambda t, p: micro_f1(t, p, labels) or 0.0,
        "hamming_loss": lambda t, p: hamming_loss(t, p, labels),
    }
    for name, metric in plain.items():
        bounds = bootstrap_ci(truth, pred, metric=metric, n_resamples=300, seed=3)
        assert bounds is not None
        assert (result[name][1].low, result[name][1].high) == pytest.approx(bounds)


def test_intervals_fall_back_to_exact_bounds_when_every_post_is_right() -> None:
    # Every resample scores the same, so BCa is undefined.
    truth = [{"a"}, {"b"}, {"a", "b"}, set()] * 5
    pred = [frozenset(s) for s in truth]
    result = intervals(truth, pred, ["a", "b", "c"], resampling=FAST)
    # Hamming: 0 of 20 posts with an error; Clopper-Pearson q in [0, 0.1684], and
    # q / 3 <= Hamming <= q.
    q = proportion_ci(0, 20)
    assert result["hamming_loss"][1].method == POST_BOUND_FALLBACK
    assert result["hamming_loss"][1].low == 0.0
    assert result["hamming_loss"][1].high == pytest.approx(q.high)
    # micro-F1: 0 of the 15 posts involving a label wrong; q_hi = CP upper of 0/15, and
    # J >= 1 - 3 q_hi / (3 q_hi + 1 - q_hi), micro-F1 = 2J / (1 + J) < 1.
    q_hi = proportion_ci(0, 15).high
    jaccard = 1 - 3 * q_hi / (3 * q_hi + 1 - q_hi)
    assert result["micro_f1"][0] == 1.0
    assert result["micro_f1"][1].method == POST_BOUND_FALLBACK
    assert result["micro_f1"][1].low == pytest.approx(2 * jaccard / (1 + jaccard))
    assert result["micro_f1"][1].high == 1.0
    # Label a: 10 posts, all right: F1 = 2J / (1 + J), J >= CP lower of 10/10.
    j_low = proportion_ci(10, 10).low
    assert result["per_label_f1"]["a"][1].method == EXACT_FALLBACK
    assert result["per_label_f1"]["a"][1].low == pytest.approx(2 * j_low / (1 + j_low))
    assert result["macro_f1"][1].method == EXACT_FALLBACK
    for estimate in (result["micro_f1"], result["macro_f1"], result["hamming_loss"]):
        _check_ordered(estimate)
    assert result["per_label_f1"]["c"] is None  # unused label: nothing to estimate


def test_undefined_metrics_get_no_interval() -> None:
    result = intervals([set(), set()], [None, frozenset()], ["a"], resampling=FAST)
    assert result["micro_f1"] is None
    assert result["macro_f1"] is None
    assert result["per_label_f1"] == {"a": None}
    assert result["hamming_loss"][0] == 0.0
    assert result["subset_accuracy"][0] == 0.5


def test_paired_subset_comparison_counts_discordant_posts() -> None:
    #   post  truth   A       B       A right  B right
    #   0     {a,b}   {a,b}   {a}     yes      no
    #   1     {a}     {a}     None    yes      no
    #   2     {}      {}      {}      yes      yes
    #   3     {b}     {a}     {b}     no       yes
    #   4     {a}     {a}     {b}     yes      no
    # b (A right, B wrong) = 3, c (B right, A wrong) = 1; exact test as b + c < 25.
    truth = [{"a", "b"}, {"a"}, set(), {"b"}, {"a"}]
    pred_a = [
        frozenset({"a", "b"}),
        frozenset({"a"}),
        frozenset(),
        frozenset({"a"}),
        frozenset({"a"}),
    ]
    pred_b = [frozenset({"a"}), None, frozenset(), frozenset({"b"}), frozenset({"b"})]
    result = paired_subset_comparison(truth, pred_a, pred_b)
    assert (result["b"], result["c"], result["method"]) == (3, 1, "exact")
    expected = statsmodels_mcnemar([[1, 3], [1, 0]], exact=True)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    # Exact two-sided binomial test of 1 of 4 at p = 1/2: 2 * (1 + 4) / 16 = 0.625.
    assert math.isclose(result["p_value"], 0.625)


def test_a_multiple_choice_report_holds_the_hand_computed_figures() -> None:
    """4 posts, labels a and b. Human {a}, {a,b}, {}, {b}; system A {a}, {a}, {}, no
    answer; system B exactly the human sets. A: subset accuracy 2/4, Hamming 2/8 (b missed
    twice), micro-F1 2*2/(2*2+0+2) = 2/3, macro-F1 (1 + 0)/2; a: precision 2/2, recall 2/2;
    b: never predicted (no precision), recall 0/2. A vs B: B alone exactly right on 2."""
    truth = [frozenset("a"), frozenset("ab"), frozenset(), frozenset("b")]
    systems = {"A": [frozenset("a"), frozenset("a"), frozenset(), None], "B": truth}
    report = compare_sets(truth, systems, labels=["a", "b"], n_resamples=200)
    a = report["systems"]["A"]
    assert a["subset_accuracy"]["value"] == pytest.approx(0.5)
    assert a["hamming_loss"]["value"] == pytest.approx(0.25)
    assert a["micro_f1"]["value"] == pytest.approx(2 / 3)
    assert a["macro_f1"]["value"] == pytest.approx(0.5)
    assert a["coverage"] == pytest.approx(0.75)
    assert (a["per_label"]["a"]["precision"]["value"], a["per_label"]["a"]["recall"]["value"]) == (
        1.0,
        1.0,
    )
    assert a["per_label"]["b"]["precision"] is None
    assert a["per_label"]["b"]["recall"]["value"] == 0.0
    assert (a["per_label"]["b"]["support"], a["per_label"]["b"]["predicted"]) == (2, 0)
    for metric in ("subset_accuracy", "hamming_loss", "micro_f1", "macro_f1"):
        found = a[metric]
        assert found["ci_low"] <= found["value"] <= found["ci_high"]
    # recall 0/2: Clopper-Pearson's 95% upper bound is 1 - 0.025^(1/2).
    assert a["per_label"]["b"]["recall"]["ci_high"] == pytest.approx(1 - 0.025**0.5)
    assert report["systems"]["B"]["subset_accuracy"]["value"] == 1.0
    assert (report["pairs"]["A vs B"]["b"], report["pairs"]["A vs B"]["c"]) == (0, 2)
    lines = render_sets(report)
    assert "| subset accuracy | 0.500 [" in "\n".join(lines)
    assert any(
        line.startswith("A vs B: exactly right where the other is not: 0 vs 2") for line in lines
    )
