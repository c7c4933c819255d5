"""The report of a held-out evaluation, assembled from the statistics as a plain dict.

:func:`compare_systems` evaluates every system, compares each pair on the same posts and
spells out systematic errors ("findings") and caveats ("warnings");
:func:`calibration_summary` measures the prediction score, P(the shown pre-label is
right), by its Brier score, expected calibration error and reliability table. The dicts
are what :mod:`takemeter.evaluation.render` prints and writes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from backend.domain import calibration
from takemeter.evaluation import multilabel
from takemeter.evaluation.statistics import (
    WILSON,
    Interval,
    Prediction,
    Resampling,
    _check_known,
    _check_labels,
    _check_nonempty,
    _check_same_length,
    _codes,
    _columns,
    _f1_scores,
    _label_counts,
    _ratio,
    _same_length,
    _tables,
    cohen_kappa,
    confusion,
    f1_intervals,
    inter_annotator_agreement,
    mcnemar,
    paired_differences,
    proportion_ci,
    top_confusions,
)

__all__ = [
    "MIN_FINDING_COUNT",
    "SIGNIFICANCE",
    "SMALL_N",
    "SMALL_SUPPORT",
    "calibration_summary",
    "compare_sets",
    "compare_systems",
    "evaluate_system",
]

# Below this many posts a 95% accuracy interval is roughly +/-10 points or wider.
SMALL_N = 100
# Per-label scores resting on fewer posts than this are flagged.
SMALL_SUPPORT = 10
MIN_FINDING_COUNT = 2
SIGNIFICANCE = 0.05


# ------------------------------------------------------------------------- reports


def _ci_fields(name: str, interval: Interval | None) -> dict[str, Any]:
    if interval is None:
        return {f"{name}_ci": None, f"{name}_ci_method": "none (no post has or gets the label)"}
    return {f"{name}_ci": [interval.low, interval.high], f"{name}_ci_method": interval.method}


def _share_fields(name: str, hits: int, n: int, *, confidence: float) -> dict[str, Any]:
    wilson = proportion_ci(hits, n, confidence=confidence, method=WILSON)
    return {
        name: hits / n,
        **_ci_fields(name, proportion_ci(hits, n, confidence=confidence)),
        f"{name}_wilson_ci": [wilson.low, wilson.high],
    }


def evaluate_system(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    labels: Sequence[str],
    texts: Sequence[str],
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All single-system numbers: accuracy and coverage with exact intervals, macro-F1 and
    per-label F1 with BCa intervals, per-label scores, confusion matrix, top confusions."""
    labels = _check_labels(labels)
    n = _check_same_length(y_true=y_true, y_pred=y_pred, texts=texts)
    _check_nonempty(n)
    _check_known(y_true, y_pred, labels)
    t, p = list(y_true), list(y_pred)
    table = _tables(_codes(t, labels), _codes(p, labels), n_labels=len(labels))
    tp, support, predicted = _label_counts(table)
    f1 = _f1_scores(table)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    macro, per_label = f1_intervals(
        t, p, labels=labels, resampling=Resampling(confidence, n_resamples, seed)
    )
    answered = sum(x is not None for x in p)
    return {
        "n": n,
        "n_predicted": answered,
        **_share_fields("coverage", answered, n, confidence=confidence),
        **_share_fields("accuracy", int(tp.sum()), n, confidence=confidence),
        "macro_f1": float(f1.mean()),
        **_ci_fields("macro_f1", macro),
        "per_label": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "per_label_ci": {label: _ci_fields("f1", iv) for label, iv in per_label.items()},
        "confusion": {
            "labels": labels,
            "columns": _columns(p, labels),
            "matrix": confusion(t, p, labels=labels),
        },
        "top_confusions": top_confusions(t, p, texts=texts),
    }


def _finding(system: str, conf: dict[str, Any], support: int) -> str:
    share = f"{conf['share_of_human_label']:.0%}"
    human = conf["human"]
    if conf["predicted"] is None:
        return (
            f"{system} gives no prediction for {conf['count']} of {support} {human} posts ({share})"
        )
    return (
        f"{system} reads {human} as {conf['predicted']} in {conf['count']} of "
        f"{support} {human} posts ({share})"
    )


def _findings(
    y_true: list[str], systems: Mapping[str, Sequence[Prediction]], texts: Sequence[str]
) -> list[str]:
    support = Counter(y_true)
    ranked: list[tuple[int, int, int, str]] = []
    for s_idx, (name, preds) in enumerate(systems.items()):
        confs = top_confusions(y_true, preds, texts=texts, k=None, examples=0)
        for c_idx, conf in enumerate(confs):
            if conf["count"] >= MIN_FINDING_COUNT:
                sentence = _finding(name, conf, support[conf["human"]])
                ranked.append((-conf["count"], s_idx, c_idx, sentence))
    # Most frequent first across systems; ties keep system order, then pair order.
    return [sentence for *_, sentence in sorted(ranked)]


def _verdict(a: str, b: str, *, p_value: float, interval: Interval) -> tuple[str | None, str]:
    """The better system, or None, and the claim: it needs both paired checks to agree."""
    excludes_zero = interval.low > 0 or interval.high < 0
    significant = p_value < SIGNIFICANCE
    if significant and excludes_zero:
        winner, loser = (a, b) if interval.low > 0 else (b, a)
        return winner, f"{winner} is better than {loser}"
    if not significant and not excludes_zero:
        return None, f"not evidence that {a} or {b} is better"
    return None, f"{a} vs {b} is inconclusive (the McNemar test and the paired interval disagree)"


def _comparison(
    y_true: list[str],
    systems: Mapping[str, Sequence[Prediction]],
    test: Mapping[str, Any],
    *,
    labels: list[str],
    resampling: Resampling,
) -> dict[str, Any]:
    a, b = test["system_a"], test["system_b"]
    differences = paired_differences(
        y_true, systems[a], systems[b], labels=labels, resampling=resampling
    )
    fields: dict[str, Any] = {"system_a": a, "system_b": b}
    for name, (value, interval) in differences.items():
        fields |= {f"{name}_difference": value, **_ci_fields(f"{name}_difference", interval)}
    accuracy_difference, interval = differences["accuracy"]
    better, verdict = _verdict(a, b, p_value=test["p_value"], interval=interval)
    evidence = (
        f"{a} \u2212 {b} accuracy {accuracy_difference:+.3f} [{interval.low:+.3f}, "
        f"{interval.high:+.3f}] ({interval.method}), McNemar {test['method']} "
        f"p = {test['p_value']:.3g}"
    )
    return {**fields, "better": better, "verdict": verdict, "evidence": evidence}


def _warnings(
    *,
    n: int,
    per_system: dict[str, dict[str, Any]],
    paired: list[dict[str, Any]],
    labels: list[str],
    confidence: float,
    agreement: Mapping[str, Any] | None,
) -> list[str]:
    out: list[str] = []
    if n < SMALL_N:
        widths = {
            name: res["accuracy_ci"][1] - res["accuracy_ci"][0] for name, res in per_system.items()
        }
        listed = ", ".join(f"{name} {w:.2f}" for name, w in widths.items())
        wide = (
            f"Only {n} held-out posts: the {confidence:.0%} intervals are wide "
            f"(accuracy interval width: {listed})"
        )
        if paired:
            # Overlapping intervals say little: both systems err on the same posts.
            wide += (
                "; judge differences by the paired comparison on the same posts, not "
                "by overlapping intervals: "
                + "; ".join(f"{p['verdict']} ({p['evidence']})" for p in paired)
            )
        out.append(wide + ".")
    for name, res in per_system.items():
        if res["coverage"] < 1:
            missing = res["n"] - res["n_predicted"]
            out.append(
                f"{name} gave no prediction for {missing} of {n} posts "
                f"(coverage {res['coverage']:.1%}); those count as wrong."
            )
    first = next(iter(per_system.values()))
    for label in labels:
        support = first["per_label"][label]["support"]
        if support == 0:
            out.append(
                f"No held-out post carries the label {label}; its F1 is 0 by "
                f"convention and pulls macro-F1 down."
            )
        elif support < SMALL_SUPPORT:
            out.append(
                f"Only {support} held-out posts carry the label {label}; its "
                f"per-label scores rest on very few examples."
            )
    if agreement is None or agreement["n_posts"] == 0:
        out.append(
            "No double-annotated posts were given, so there is no human-agreement "
            "ceiling to compare the systems' kappas against."
        )
    elif agreement["value"] is None:
        out.append(
            f"Inter-annotator agreement ({agreement['statistic']}) is undefined (fewer "
            f"than 2 double-annotated posts, or a single label throughout)."
        )
    return out


def compare_systems(
    y_true: Sequence[str],
    systems: Mapping[str, Sequence[Prediction]],
    *,
    labels: Sequence[str],
    texts: Sequence[str],
    annotations: Sequence[Mapping[Hashable, str]] | None = None,
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Evaluate every system, compare each pair on the same posts (McNemar and paired
    intervals of the differences), measure human agreement, and spell out systematic
    errors ("findings") and caveats ("warnings").

    ``annotations``: per double-annotated post, {annotator: label}.
    """
    if not systems:
        raise ValueError("need at least one system")
    labels = _check_labels(labels)
    t = list(y_true)
    named = {f"system {name!r}": preds for name, preds in systems.items()}
    n = _same_length({"y_true": t, "texts": texts, **named})
    _check_nonempty(n)
    resampling = Resampling(confidence, n_resamples, seed)
    # Same seed for every system: with equal n they draw the same resampled post sets.
    per_system = {
        name: evaluate_system(
            t,
            preds,
            labels=labels,
            texts=texts,
            seed=seed,
            n_resamples=n_resamples,
            confidence=confidence,
        )
        for name, preds in systems.items()
    }
    tests = [
        {"system_a": a, "system_b": b, **mcnemar(t, systems[a], systems[b])}
        for a, b in itertools.combinations(systems, 2)
    ]
    paired = [_comparison(t, systems, test, labels=labels, resampling=resampling) for test in tests]
    agreement = None if annotations is None else inter_annotator_agreement(annotations)
    return {
        "n": n,
        "labels": labels,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
        "systems": per_system,
        "mcnemar": tests,
        "paired": paired,
        "kappa_vs_human": {name: cohen_kappa(t, preds) for name, preds in systems.items()},
        "inter_annotator": agreement,
        # The agreement value and its pair count, under their earlier names.
        "inter_annotator_kappa": None if agreement is None else agreement["value"],
        "n_annotator_pairs": 0 if agreement is None else agreement["n_pairs"],
        "warnings": _warnings(
            n=n,
            per_system=per_system,
            paired=paired,
            labels=labels,
            confidence=confidence,
            agreement=agreement,
        ),
        "findings": _findings(t, systems, texts),
    }


# ---------------------------------------------------------------------- calibration


def calibration_summary(
    scores: Mapping[str, Sequence[float]],
    right: Sequence[bool],
    *,
    bins: int = calibration.BINS,
) -> dict[str, Any]:
    """How well each named set of scores reads as P(right) on the same posts.

    Per set: the Brier score (mean squared error of the probability; lower is better),
    the expected calibration error over ``bins`` equal-width bins, the mean score and the
    reliability table. ``brier_constant`` is the Brier score of always answering the share
    right: a score that tells right from wrong pre-labels apart does better.
    """
    if not scores:
        raise ValueError("need at least one set of scores")
    outcomes = [bool(r) for r in right]
    named = {f"scores {name!r}": values for name, values in scores.items()}
    n = _same_length({"right": outcomes, **named})
    _check_nonempty(n)
    share = sum(outcomes) / n
    return {
        "n": n,
        "n_right": sum(outcomes),
        "share_right": share,
        "bins": bins,
        "brier_constant": share * (1 - share),
        "scores": {
            name: {
                "brier": calibration.brier(values, outcomes),
                "ece": calibration.ece(values, outcomes, bins=bins),
                "mean_score": float(np.mean(values)),
                "reliability": calibration.reliability_bins(values, outcomes, bins=bins),
            }
            for name, values in scores.items()
        },
    }


# ------------------------------------------------------------- multiple-choice questions


def _estimate(found: multilabel.Estimate | None) -> dict[str, Any] | None:
    if found is None:
        return None
    value, interval = found
    return {
        "value": value,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "ci_method": interval.method,
    }


def _share(hits: int, trials: int, confidence: float) -> dict[str, Any] | None:
    """A share with its Clopper-Pearson interval; None where nothing was counted (0/0)."""
    if not trials:
        return None
    interval = proportion_ci(hits, trials, confidence=confidence)
    return _estimate((hits / trials, interval))


def compare_sets(
    truth: Sequence[multilabel.LabelSet],
    systems: Mapping[str, Sequence[multilabel.Answer]],
    *,
    labels: Sequence[str],
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """A multiple-choice question's report: per system subset accuracy, Hamming loss,
    micro- and macro-F1 with intervals (multilabel.intervals), and per label precision
    and recall (Clopper-Pearson: shares of the predicted and of the human sets) and F1;
    each pair of systems compared on subset correctness (McNemar) on the same posts."""
    if not systems:
        raise ValueError("need at least one system")
    resampling = Resampling(confidence, n_resamples, seed)
    report: dict[str, Any] = {"n": len(truth), "labels": list(labels), "systems": {}}
    for name, predicted in systems.items():
        found = multilabel.intervals(truth, predicted, labels, resampling=resampling)
        human = multilabel.indicator(truth, labels)
        said = multilabel.indicator(predicted, labels)
        per_label = {}
        for j, label in enumerate(labels):
            hits, support, count = (
                int((human[:, j] & said[:, j]).sum()),
                int(human[:, j].sum()),
                int(said[:, j].sum()),
            )
            per_label[label] = {
                "support": support,
                "predicted": count,
                "precision": _share(hits, count, confidence),
                "recall": _share(hits, support, confidence),
                "f1": _estimate(found["per_label_f1"][label]),
            }
        report["systems"][name] = {
            "coverage": sum(p is not None for p in predicted) / len(predicted),
            **{
                metric: _estimate(found[metric])
                for metric in ("subset_accuracy", "hamming_loss", "micro_f1", "macro_f1")
            },
            "per_label": per_label,
        }
    report["pairs"] = {
        f"{a} vs {b}": multilabel.paired_subset_comparison(truth, systems[a], systems[b])
        for a, b in itertools.combinations(systems, 2)
    }
    return report
