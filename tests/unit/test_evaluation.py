"""Unit tests for takemeter.evaluation, checked against numbers worked out by hand."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from takemeter.evaluation import (
    accuracy,
    bootstrap_ci,
    cohen_kappa,
    compare_systems,
    confusion,
    evaluate_system,
    macro_f1,
    mcnemar,
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


def _report(n_resamples: int = 500) -> dict:
    return compare_systems(
        HUMAN,
        {"finetuned": FINETUNED, "llm": LLM},
        labels=LABELS,
        texts=TEXTS,
        annotator_pairs=ANNOTATOR_PAIRS,
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


def test_bootstrap_all_right_gives_degenerate_interval():
    y = ["A", "B", "C"] * 10
    assert bootstrap_ci(y, y, metric=accuracy, n_resamples=300) == (1.0, 1.0)


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
