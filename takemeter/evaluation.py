"""Held-out evaluation: fine-tuned classifier and zero-shot LLM against human labels.

Labels are plain strings. A prediction of ``None`` means the system gave no answer: it
counts as wrong everywhere and shows up as coverage below 100%.

Every interval is chosen to hold on small held-out sets: exact Clopper-Pearson for the
shares (accuracy, coverage; Wilson alongside), BCa bootstrap for F1 (which is no share),
with an exact Clopper-Pearson bound where BCa is undefined. Two systems are compared on
the same posts (McNemar, paired bootstrap of the difference), never by overlapping
intervals. Agreement among annotators: Cohen's kappa for two, Fleiss' kappa or
Krippendorff's alpha for more. The prediction score, P(the shown pre-label is right), is
measured by its Brier score, expected calibration error and a reliability diagram.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats import contingency_tables, inter_rater

from backend.domain import calibration, policy
from backend.files import write_text_atomic

__all__ = [
    "BCA",
    "CLOPPER_PEARSON",
    "DEFAULT_RESAMPLING",
    "EXACT_FALLBACK",
    "NONE_COLUMN",
    "PAIRED_BCA",
    "WILSON",
    "Interval",
    "Resampling",
    "accuracy",
    "accuracy_ci",
    "bootstrap_ci",
    "calibration_summary",
    "cohen_kappa",
    "compare_systems",
    "confusion",
    "evaluate_system",
    "f1_intervals",
    "fleiss_kappa",
    "inter_annotator_agreement",
    "krippendorff_alpha",
    "macro_f1",
    "mcnemar",
    "paired_differences",
    "proportion_ci",
    "render_markdown",
    "render_terminal",
    "top_confusions",
    "write_json",
]

Prediction = str | None

NONE_COLUMN = "(none)"
# numpy/sklearn cannot mix None with strings, so None is swapped for this token.
# The NUL byte keeps it from ever colliding with a real label.
_MISSING = "\x00no-prediction"
EXAMPLE_CHARS = 200
# Below this many discordant pairs the chi-square approximation is poor.
EXACT_MCNEMAR_BELOW = 25
# Below this many posts a 95% accuracy interval is roughly +/-10 points or wider.
SMALL_N = 100
# Per-label scores resting on fewer posts than this are flagged.
SMALL_SUPPORT = 10
MIN_FINDING_COUNT = 2
SIGNIFICANCE = 0.05
# Resampled post indices held at once by the vectorised bootstrap (memory bound).
_BOOTSTRAP_CELLS = 1 << 22

# Interval methods, as the report names them.
CLOPPER_PEARSON = "Clopper-Pearson"
WILSON = "Wilson"
BCA = "BCa bootstrap"
PAIRED_BCA = "paired BCa bootstrap"
EXACT_FALLBACK = "exact Clopper-Pearson bound, BCa undefined"
_SCIPY_PROPORTION_METHOD = {CLOPPER_PEARSON: "exact", WILSON: "wilson"}

COHEN = "Cohen's kappa"
FLEISS = "Fleiss' kappa"
KRIPPENDORFF = "Krippendorff's alpha, nominal"


class Interval(NamedTuple):
    """A confidence interval and the method that produced it (the report prints both)."""

    low: float
    high: float
    method: str


# --------------------------------------------------------------------------- checks


def _check_same_length(**seqs: Sequence[Any]) -> int:
    return _same_length(seqs)


def _same_length(seqs: Mapping[str, Sequence[Any]]) -> int:
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def _check_nonempty(n: int) -> None:
    if n == 0:
        raise ValueError("need at least one item to evaluate")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


@dataclass(frozen=True)
class Resampling:
    """How a report's bootstrap intervals are drawn: one value, so that every system and
    pair is resampled alike (same seed and n: the same resampled post sets)."""

    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        _check_confidence(self.confidence)
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be >= 1, got {self.n_resamples}")


DEFAULT_RESAMPLING = Resampling()


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if not labels:
        raise ValueError("labels must not be empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels contain duplicates: {labels}")
    if NONE_COLUMN in labels:
        raise ValueError(f"{NONE_COLUMN!r} is reserved for missing predictions")
    return labels


def _check_known(y_true: Sequence[str], y_pred: Sequence[Prediction], labels: list[str]) -> None:
    # An unknown label would silently vanish from the confusion matrix, so fail loudly.
    known = set(labels)
    bad_true = sorted({t for t in y_true if t not in known}, key=str)
    if bad_true:
        raise ValueError(f"human labels not in labels: {bad_true}")
    bad_pred = sorted({p for p in y_pred if p is not None and p not in known}, key=str)
    if bad_pred:
        raise ValueError(f"predictions not in labels: {bad_pred} (map unusable answers to None)")


def _fill(preds: Sequence[Prediction]) -> list[str]:
    return [_MISSING if p is None else p for p in preds]


def _is_right(t: str, p: Prediction) -> bool:
    return p is not None and p == t


# ---------------------------------------------------------------------- count tables


def _codes(values: Sequence[Prediction], labels: Sequence[str]) -> np.ndarray:
    """Label index per post; ``len(labels)`` ("other") for None or an unknown label."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, len(labels)) for v in values], dtype=np.intp)


def _tables(t: np.ndarray, p: np.ndarray, *, n_labels: int) -> np.ndarray:
    """Count tables (..., L+1, L+1) of code arrays (..., n): rows human, columns predicted,
    the last row and column "other". One bincount serves thousands of resamples at once."""
    size = n_labels + 1
    cells = (t * size + p).reshape(math.prod(t.shape[:-1]), t.shape[-1])
    cells = cells + (np.arange(cells.shape[0]) * size * size)[:, None]
    counts = np.bincount(cells.ravel(), minlength=cells.shape[0] * size * size)
    return counts.reshape(*t.shape[:-1], size, size)


def _label_counts(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label (..., L): true positives, human support, and predictions of it."""
    tp = np.diagonal(table, axis1=-2, axis2=-1)[..., :-1]
    return tp, table.sum(axis=-1)[..., :-1], table.sum(axis=-2)[..., :-1]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # sklearn's zero_division=0: a label nobody used scores 0.
    return np.divide(num, den, out=np.zeros(np.shape(den)), where=den > 0)


def _right(t: np.ndarray, p: np.ndarray, *, n_labels: int) -> np.ndarray:
    """Where the prediction is the human label (codes; "other" is never right)."""
    return (p == t) & (t < n_labels)


def _f1_scores(table: np.ndarray) -> np.ndarray:
    """Per-label F1 = 2tp / (2tp + fp + fn) = 2tp / (support + predicted)."""
    tp, support, predicted = _label_counts(table)
    return _ratio(2 * tp, support + predicted)


# -------------------------------------------------------------------------- metrics


def accuracy(y_true: Sequence[str], y_pred: Sequence[Prediction]) -> float:
    """Share of posts where the prediction equals the human label (None is wrong)."""
    _check_nonempty(_check_same_length(y_true=y_true, y_pred=y_pred))
    return policy.accuracy(list(y_true), list(y_pred))


def macro_f1(
    y_true: Sequence[str], y_pred: Sequence[Prediction], *, labels: Sequence[str]
) -> float:
    """Unweighted mean F1 over ``labels``; None predictions count as wrong."""
    labels = _check_labels(labels)
    n = _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_nonempty(n)
    # Hand-rolled rather than sklearn.f1_score: the bootstrap needs it on thousands of
    # resamples at once, and sklearn's input validation dominates at these sizes.
    table = _tables(_codes(y_true, labels), _codes(y_pred, labels), n_labels=len(labels))
    return float(np.mean(_f1_scores(table)))


def cohen_kappa(a: Sequence[Prediction], b: Sequence[Prediction]) -> float | None:
    """Cohen's kappa between two raters; None where it is undefined.

    None (no answer) is treated as a category of its own.
    """
    n = _check_same_length(a=a, b=b)
    if n < 2:
        return None
    fa, fb = _fill(a), _fill(b)
    count_a, count_b = Counter(fa), Counter(fb)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / n**2
    # Both raters used one and the same label throughout: kappa is 0/0.
    if expected >= 1 - 1e-12:
        return None
    return float(cohen_kappa_score(fa, fb))


# ------------------------------------------------------------------------ intervals


def proportion_ci(
    successes: int,
    trials: int,
    *,
    confidence: float = 0.95,
    method: str = CLOPPER_PEARSON,
) -> Interval:
    """Interval for a binomial share (accuracy, coverage).

    Clopper-Pearson inverts the exact binomial test, so it never covers less than
    promised, even at 30 of 30 where a bootstrap collapses to [1, 1]; Wilson is a little
    shorter and close to nominal on average.
    """
    _check_confidence(confidence)
    if method not in _SCIPY_PROPORTION_METHOD:
        raise ValueError(f"method must be one of {sorted(_SCIPY_PROPORTION_METHOD)}")
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}"
        )
    ci = stats.binomtest(successes, trials).proportion_ci(
        confidence_level=confidence, method=_SCIPY_PROPORTION_METHOD[method]
    )
    return Interval(float(ci.low), float(ci.high), method)


def accuracy_ci(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    confidence: float = 0.95,
    method: str = CLOPPER_PEARSON,
) -> Interval:
    """:func:`proportion_ci` of the posts a system gets right (None is wrong)."""
    n = _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_nonempty(n)
    right = sum(_is_right(t, p) for t, p in zip(y_true, y_pred, strict=True))
    return proportion_ci(right, n, confidence=confidence, method=method)


def _bca(
    statistic: Callable[..., Any],
    n: int,
    *,
    vectorized: bool,
    resampling: Resampling,
) -> np.ndarray:
    """BCa bounds, shape (k, 2), of each of a statistic's k outputs over resampled posts.

    ``statistic`` takes post indices. A row is NaN where BCa is undefined: fewer than two
    posts, every resample scoring the same, or a bound that excludes the observed value;
    a percentile interval would then claim a certainty the data do not give.
    """
    theta = np.atleast_1d(np.asarray(statistic(np.arange(n)), dtype=float))
    if n < 2:
        return np.full((theta.size, 2), np.nan)
    with warnings.catch_warnings():
        # Degenerate resamples make scipy divide 0 by 0 and warn; NaN is handled below.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (np.arange(n),),
            statistic,
            vectorized=vectorized,
            method="BCa",
            n_resamples=resampling.n_resamples,
            confidence_level=resampling.confidence,
            batch=max(1, _BOOTSTRAP_CELLS // n),
            rng=np.random.default_rng(resampling.seed),
        )
    ci = result.confidence_interval
    bounds = np.column_stack([np.atleast_1d(ci.low), np.atleast_1d(ci.high)]).astype(float)
    tolerance = 1e-9
    holds = (bounds[:, 0] <= theta + tolerance) & (theta - tolerance <= bounds[:, 1])
    bounds[~holds] = np.nan
    return bounds


def bootstrap_ci(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    metric: Callable[[list, list], float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """BCa bootstrap interval for any ``metric``, resampling posts with replacement.

    BCa corrects the percentile interval's bias and skew, which are large on small sets.
    None where BCa is undefined (see :func:`_bca`): the caller needs an exact bound then.
    """
    n = _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_nonempty(n)
    t, p = list(y_true), list(y_pred)

    def statistic(idx: np.ndarray) -> float:
        return metric([t[i] for i in idx], [p[i] for i in idx])

    [(low, high)] = _bca(
        statistic, n, vectorized=False, resampling=Resampling(confidence, n_resamples, seed)
    )
    return None if math.isnan(low) else (float(low), float(high))


@dataclass(frozen=True)
class _Share:
    """``weight * score(p)`` for a binomial share ``p`` seen as ``hits`` of ``trials``."""

    weight: float
    hits: int
    trials: int
    score: Callable[[float], float]


def _as_f1(jaccard: float) -> float:
    # A label's F1 is 2J / (1 + J) with J = tp / (tp + fp + fn), the share of the posts
    # that involve the label on which human and system agree: F1 is exact through J.
    return 2 * jaccard / (1 + jaccard)


def _f1_shares(table: np.ndarray, *, weight: float) -> list[_Share]:
    tp, support, predicted = _label_counts(table)
    return [
        _Share(weight, int(k), int(s + q - k), _as_f1)
        for k, s, q in zip(tp, support, predicted, strict=True)
    ]


def _exact_bound(shares: Sequence[_Share], *, confidence: float) -> tuple[float, float]:
    """Bound a sum of monotone scores of shares from their Clopper-Pearson intervals.

    Each share gets confidence 1 - (1 - confidence) / k (Bonferroni), so the sum holds
    at ``confidence`` at least. It needs no resampling, so it stays honest where every
    resample scores the same. A share with no trials is fixed at 0 (F1's convention).
    """
    live = [s for s in shares if s.trials > 0]
    level = 1 - (1 - confidence) / max(len(live), 1)
    low = high = 0.0
    for share in live:
        ci = proportion_ci(share.hits, share.trials, confidence=level)
        ends = sorted(share.weight * share.score(x) for x in (ci.low, ci.high))
        low, high = low + ends[0], high + ends[1]
    return max(low, -1.0), min(high, 1.0)


def _bca_or_exact(
    bounds: np.ndarray, shares: Sequence[_Share], *, method: str, confidence: float
) -> Interval:
    if np.all(np.isfinite(bounds)):
        return Interval(float(bounds[0]), float(bounds[1]), method)
    return Interval(*_exact_bound(shares, confidence=confidence), EXACT_FALLBACK)


def _resampled(*codes: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    return lambda idx: tuple(c[idx] for c in codes)


def f1_intervals(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    labels: Sequence[str],
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> tuple[Interval, dict[str, Interval | None]]:
    """Macro-F1 and per-label F1 intervals: BCa bootstrap, as F1 is no binomial share.

    Where BCa is undefined (e.g. every post right), an exact Clopper-Pearson bound
    instead. A label no post has or is predicted gets None: nothing to estimate.
    """
    labels = _check_labels(labels)
    n = _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_nonempty(n)
    n_labels = len(labels)
    pick = _resampled(_codes(y_true, labels), _codes(y_pred, labels))

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        f1 = _f1_scores(_tables(*pick(idx), n_labels=n_labels))
        return np.moveaxis(np.concatenate([f1.mean(-1, keepdims=True), f1], -1), -1, 0)

    bounds = _bca(statistic, n, vectorized=True, resampling=resampling)
    table = _tables(*pick(np.arange(n)), n_labels=n_labels)
    macro = _bca_or_exact(
        bounds[0],
        _f1_shares(table, weight=1 / n_labels),
        method=BCA,
        confidence=resampling.confidence,
    )
    per_label = {
        label: None
        if share.trials == 0
        else _bca_or_exact(bounds[i + 1], [share], method=BCA, confidence=resampling.confidence)
        for i, (label, share) in enumerate(zip(labels, _f1_shares(table, weight=1.0), strict=True))
    }
    return macro, per_label


def _identity(share: float) -> float:
    return share


def paired_differences(
    y_true: Sequence[str],
    pred_a: Sequence[Prediction],
    pred_b: Sequence[Prediction],
    *,
    labels: Sequence[str],
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> dict[str, tuple[float, Interval]]:
    """Accuracy and macro-F1 of A minus B, with a paired BCa bootstrap interval each.

    Both systems label the same posts, so their errors go together: resampling posts
    (not each system on its own) keeps that pairing, which two separate intervals
    ignore. Where BCa is undefined (e.g. identical answers), an exact bound instead.
    """
    labels = _check_labels(labels)
    n = _check_same_length(y_true=y_true, pred_a=pred_a, pred_b=pred_b)
    _check_nonempty(n)
    n_labels = len(labels)
    pick = _resampled(*(_codes(x, labels) for x in (y_true, pred_a, pred_b)))

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        t, a, b = pick(idx)
        return np.stack(
            [
                _right(t, a, n_labels=n_labels).mean(-1) - _right(t, b, n_labels=n_labels).mean(-1),
                _f1_scores(_tables(t, a, n_labels=n_labels)).mean(-1)
                - _f1_scores(_tables(t, b, n_labels=n_labels)).mean(-1),
            ]
        )

    observed = statistic(np.arange(n))
    bounds = _bca(statistic, n, vectorized=True, resampling=resampling)
    t, a, b = pick(np.arange(n))
    right_a, right_b = _right(t, a, n_labels=n_labels), _right(t, b, n_labels=n_labels)
    accuracy_shares = [
        _Share(1.0, int(np.sum(right_a & ~right_b)), n, _identity),
        _Share(-1.0, int(np.sum(right_b & ~right_a)), n, _identity),
    ]
    f1_shares = [
        *_f1_shares(_tables(t, a, n_labels=n_labels), weight=1 / n_labels),
        *_f1_shares(_tables(t, b, n_labels=n_labels), weight=-1 / n_labels),
    ]
    return {
        name: (
            float(observed[i]),
            _bca_or_exact(bounds[i], shares, method=PAIRED_BCA, confidence=resampling.confidence),
        )
        for i, (name, shares) in enumerate([("accuracy", accuracy_shares), ("macro_f1", f1_shares)])
    }


def mcnemar(
    y_true: Sequence[str], pred_a: Sequence[Prediction], pred_b: Sequence[Prediction]
) -> dict[str, Any]:
    """Paired test of two systems on the same posts: only posts where they differ count.

    ``b`` counts posts system A gets right and B wrong, ``c`` the reverse. statsmodels'
    exact two-sided binomial test when b + c < 25 (``statistic`` is then min(b, c)), else
    its continuity-corrected chi-square with 1 degree of freedom.
    """
    _check_same_length(y_true=y_true, pred_a=pred_a, pred_b=pred_b)
    pairs = Counter(
        (_is_right(t, pa), _is_right(t, pb))
        for t, pa, pb in zip(y_true, pred_a, pred_b, strict=True)
    )
    table = [[pairs[True, True], pairs[True, False]], [pairs[False, True], pairs[False, False]]]
    b, c = table[0][1], table[1][0]
    exact = b + c < EXACT_MCNEMAR_BELOW
    result = contingency_tables.mcnemar(table, exact=exact, correction=True)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    if b == c and not exact:
        # No evidence either way; the continuity correction would push chi2 above 0.
        statistic, p_value = 0.0, 1.0
    return {
        "b": int(b),
        "c": int(c),
        "statistic": statistic,
        "p_value": min(p_value, 1.0),
        "method": "exact" if exact else "chi2-corrected",
    }


# ------------------------------------------------------------------------ agreement


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa: agreement among any raters, the same number of ratings per post.

    Unlike Cohen's kappa it does not need the same two people on every post. None where
    it is undefined (no post, or one label throughout).
    """
    rows = [list(r) for r in ratings]
    if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings per post")
    table, _ = inter_rater.aggregate_raters(np.array(rows, dtype=str))
    if table.shape[1] < 2:
        return None
    return float(inter_rater.fleiss_kappa(table, method="fleiss"))


def krippendorff_alpha(ratings: Sequence[Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal labels: any number of ratings per post.

    It takes the posts Fleiss' kappa cannot (two annotators here, three there). Posts with
    fewer than two ratings carry no agreement and are left out. None where undefined.
    """
    units = [list(r) for r in ratings if len(r) >= 2]
    categories = sorted({c for unit in units for c in unit})
    if len(categories) < 2:
        return None
    index = {c: i for i, c in enumerate(categories)}
    coincidences = np.zeros((len(categories), len(categories)))
    for unit in units:
        counts = np.bincount([index[c] for c in unit], minlength=len(categories))
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    n_c = coincidences.sum(axis=1)
    n = n_c.sum()
    # alpha = 1 - D_observed / D_expected, both over the off-diagonal coincidences.
    return float(1 - (n - 1) * (n - np.trace(coincidences)) / (n**2 - np.sum(n_c**2)))


def inter_annotator_agreement(annotations: Sequence[Mapping[Hashable, str]]) -> dict[str, Any]:
    """The human-agreement ceiling, by the statistic that fits who labeled what.

    ``annotations`` holds one {annotator: label} per post. Cohen's kappa for exactly two
    annotators; with more, pooling their pairs into one Cohen's kappa would mix raters,
    so Fleiss' kappa (same number of annotators per post) or Krippendorff's alpha.
    """
    rated = [dict(a) for a in annotations if len(a) >= 2]
    annotators = sorted({who for a in rated for who in a}, key=repr)
    n_pairs = sum(math.comb(len(a), 2) for a in rated)
    statistic: str | None
    value: float | None
    if not rated:
        statistic, value = None, None
    elif len(annotators) == 2:
        first, second = annotators
        statistic = COHEN
        value = cohen_kappa([a[first] for a in rated], [a[second] for a in rated])
    elif len({len(a) for a in rated}) == 1:
        statistic, value = FLEISS, fleiss_kappa([list(a.values()) for a in rated])
    else:
        statistic, value = KRIPPENDORFF, krippendorff_alpha([list(a.values()) for a in rated])
    return {
        "statistic": statistic,
        "value": value,
        "n_posts": len(rated),
        "n_annotators": len(annotators),
        "n_pairs": n_pairs,
    }


def _columns(y_pred: Sequence[Prediction], labels: list[str]) -> list[str]:
    has_none = any(p is None for p in y_pred)
    return labels + ([NONE_COLUMN] if has_none else [])


def confusion(
    y_true: Sequence[str], y_pred: Sequence[Prediction], *, labels: Sequence[str]
) -> list[list[int]]:
    """Counts with rows = human label, columns = predicted label (+ "(none)" if needed)."""
    labels = _check_labels(labels)
    _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_known(y_true, y_pred, labels)
    matrix = _tables(_codes(y_true, labels), _codes(y_pred, labels), n_labels=len(labels))
    # Drop the "other" row (no human label is missing) and, if unused, column.
    ncols = len(_columns(y_pred, labels))
    return [[int(x) for x in row[:ncols]] for row in matrix[: len(labels)]]


def _truncate(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def top_confusions(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    texts: Sequence[str],
    k: int | None = 5,
    examples: int = 3,
) -> list[dict[str, Any]]:
    """The ``k`` most frequent (human, predicted) error pairs, with example posts.

    ``k=None`` returns every pair. Ties are ordered by human then predicted label, with
    missing predictions (predicted None) last.
    """
    _check_same_length(y_true=y_true, y_pred=y_pred, texts=texts)
    support = Counter(y_true)
    groups: dict[tuple[str, Prediction], list[int]] = {}
    for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        if not _is_right(t, p):
            groups.setdefault((t, p), []).append(i)
    ordered = sorted(
        groups.items(),
        key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1] is None, kv[0][1] or ""),
    )
    if k is not None:
        ordered = ordered[:k]
    return [
        {
            "human": human,
            "predicted": predicted,
            "count": len(idx),
            "share_of_human_label": len(idx) / support[human],
            "examples": [_truncate(texts[i]) for i in idx[: max(examples, 0)]],
        }
        for (human, predicted), idx in ordered
    ]


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

RELIABILITY_PNG = "reliability.png"


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


def _calibration_lines(cal: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Score = estimated P(the shown pre-label is right), on {_posts(cal['n'])} with a "
        f"pre-label ({cal['n_right']} right, {cal['share_right']:.1%}); always answering "
        f"{cal['share_right']:.2f} would score Brier {cal['brier_constant']:.3f}."
    ]
    lines += list(cal.get("notes") or [])
    for name, res in cal["scores"].items():
        lines.append(
            f"{name}: Brier {res['brier']:.3f}, ECE {res['ece']:.3f} ({cal['bins']} bins), "
            f"mean score {res['mean_score']:.3f}"
        )
    return lines


def _reliability_lines(cal: Mapping[str, Any]) -> list[str]:
    name, res = next(iter(cal["scores"].items()))
    lines = [f"Reliability of {name} (bins with posts):"]
    for b in res["reliability"]:
        if b["n"]:
            lines.append(
                f"  score {b['low']:.1f}-{b['high']:.1f}: {_posts(b['n'])}, mean score "
                f"{b['mean_score']:.2f}, right {b['share_right']:.0%}"
            )
    return lines


def _reliability_table(cal: Mapping[str, Any]) -> list[str]:
    sets = list(cal["scores"].values())
    head = " | ".join(f"{_md(name)}: posts, mean score, right" for name in cal["scores"])
    rows = [f"| score | {head} |", "|---|" + "---|" * len(sets)]
    for k in range(cal["bins"]):
        cells = [
            f"{b['n']}, {b['mean_score']:.2f}, {b['share_right']:.0%}" if b["n"] else "0"
            for b in (res["reliability"][k] for res in sets)
        ]
        edge = sets[0]["reliability"][k]
        rows.append(f"| {edge['low']:.1f}-{edge['high']:.1f} | " + " | ".join(cells) + " |")
    return rows


def _plot_reliability(cal: Mapping[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfectly calibrated")
    names = list(cal["scores"])
    width = 1 / cal["bins"] / (len(names) + 1)
    largest = max(b["n"] for res in cal["scores"].values() for b in res["reliability"])
    for k, (name, res) in enumerate(cal["scores"].items()):
        used = [b for b in res["reliability"] if b["n"]]
        xs = [b["mean_score"] for b in used]
        ys = [b["share_right"] for b in used]
        # Marker area follows the bin's post count: a bin of 2 posts proves little.
        sizes = [20 + 180 * b["n"] / largest for b in used]
        label = f"{name}: Brier {res['brier']:.3f}, ECE {res['ece']:.3f}"
        (line,) = top.plot(xs, ys, marker="", lw=1.5, label=label)
        top.scatter(xs, ys, s=sizes, color=line.get_color(), zorder=3)
        bottom.bar([b["low"] + width * (k + 0.5) for b in res["reliability"]],
                   [b["n"] for b in res["reliability"]], width=width, align="edge",
                   color=line.get_color(), label=name)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("share of pre-labels right")
    top.set_title(
        f"Score reliability on {_posts(cal['n'])} ({cal['share_right']:.0%} right)"
    )
    top.legend(loc="lower right", fontsize="small")  # calibrated points stay off it
    top.grid(alpha=0.3)
    bottom.set_xlabel("score: estimated P(the shown pre-label is right)")
    bottom.set_ylabel("posts")
    bottom.set_xticks([i / cal["bins"] for i in range(cal["bins"] + 1)])
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------ rendering

_FALLBACK_MARK = "\u2020"


def _cell(
    value: float, ci: Sequence[float] | None, method: str, *, usual: str, spec: str = ".3f"
) -> str:
    """``value [low, high]``; a dagger where the interval is not the row's usual method."""
    if ci is None:
        return f"{value:{spec}} [n/a]"
    mark = "" if method == usual else _FALLBACK_MARK
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]{mark}"


def _metric_cell(res: Mapping[str, Any], name: str, *, usual: str, spec: str = ".3f") -> str:
    return _cell(res[name], res[f"{name}_ci"], res[f"{name}_ci_method"], usual=usual, spec=spec)


def _fmt_kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary_rows(report: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    systems = report["systems"].values()
    rows = [
        (
            f"accuracy ({CLOPPER_PEARSON})",
            [_metric_cell(s, "accuracy", usual=CLOPPER_PEARSON) for s in systems],
        ),
        (f"macro-F1 ({BCA})", [_metric_cell(s, "macro_f1", usual=BCA) for s in systems]),
        (
            f"coverage ({CLOPPER_PEARSON})",
            [_metric_cell(s, "coverage", usual=CLOPPER_PEARSON, spec=".1%") for s in systems],
        ),
    ]
    first = next(iter(systems))
    for label in report["labels"]:
        support = first["per_label"][label]["support"]
        cells = [
            _cell(
                s["per_label"][label]["f1"],
                s["per_label_ci"][label]["f1_ci"],
                s["per_label_ci"][label]["f1_ci_method"],
                usual=BCA,
            )
            for s in systems
        ]
        rows.append((f"F1 {label} (n={support})", cells))
    return rows


def _paired_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for test, pair in zip(report["mcnemar"], report["paired"], strict=True):
        a, b = test["system_a"], test["system_b"]
        lines.append(
            f"McNemar {a} vs {b}: {a} right & {b} wrong = {test['b']}, "
            f"{a} wrong & {b} right = {test['c']}; {test['method']} p = {test['p_value']:.3g}"
        )
        for name, title in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            key = f"{name}_difference"
            lines.append(
                f"{a} \u2212 {b} {title}: "
                f"{_metric_cell(pair, key, usual=PAIRED_BCA, spec='+.3f')} "
                f"({pair[f'{key}_ci_method']})"
            )
        lines.append(f"\u2192 {pair['verdict']}")
    return lines


def _kappa_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Cohen's kappa {name} vs human: {_fmt_kappa(k)}"
        for name, k in report["kappa_vs_human"].items()
    ]
    agreement = report["inter_annotator"]
    if agreement is None or agreement["value"] is None:
        lines.append("Inter-annotator agreement: not available")
    else:
        short = "alpha" if agreement["statistic"] == KRIPPENDORFF else "kappa"
        lines.append(
            f"Inter-annotator {short}: {agreement['value']:.3f} ({agreement['statistic']}; "
            f"{agreement['n_annotators']} annotators, {_posts(agreement['n_posts'])} "
            f"annotated more than once)"
        )
    return lines


def _intro(report: Mapping[str, Any]) -> str:
    return (
        f"{report['n']} held-out posts; {report['confidence']:.0%} intervals: "
        f"{CLOPPER_PEARSON} (exact) for accuracy and coverage, {BCA} for F1, "
        f"{PAIRED_BCA} for differences ({report['n_resamples']} resamples of the posts, "
        f"seed {report['seed']})."
    )


def _notes(text: str) -> list[str]:
    if _FALLBACK_MARK not in text:
        return []
    return [
        f"{_FALLBACK_MARK} BCa undefined here (every resample scored the same, or the "
        f"observed value fell outside them): an exact Clopper-Pearson bound instead (per "
        f"label on tp of tp + fp + fn, Bonferroni-combined over labels and systems)."
    ]


def render_terminal(report: Mapping[str, Any]) -> str:
    """Fixed-width text rendering of a :func:`compare_systems` report."""
    names = list(report["systems"])
    rows = _summary_rows(report)
    if any(cell.endswith(_FALLBACK_MARK) for _, cells in rows for cell in cells):
        # Keep the digits of unmarked cells in line with the marked ones.
        rows = [
            (label, [c if c.endswith(_FALLBACK_MARK) else c + " " for c in cells])
            for label, cells in rows
        ]
    first_w = max(len(label) for label, _ in rows)
    widths = [max(len(name), *(len(cells[j]) for _, cells in rows)) for j, name in enumerate(names)]

    def line(first: str, cells: Sequence[str]) -> str:
        padded = (cell.rjust(w) for cell, w in zip(cells, widths, strict=True))
        return (first.ljust(first_w) + "  " + "  ".join(padded)).rstrip()

    header = line("", names)
    table = [line(label, cells) for label, cells in rows]
    out = [_intro(report), "", header, "-" * len(header), *table]
    out += _notes("\n".join(table))
    if report["paired"]:
        out += ["", "Paired comparisons (same posts):", *_paired_lines(report)]
    out += ["", *_kappa_lines(report)]
    if report.get("calibration"):
        lines = _calibration_lines(report["calibration"]) + _reliability_lines(
            report["calibration"]
        )
        out += ["", "Score calibration:", *(f"  {line}" for line in lines)]
    out += ["", "Findings:"]
    out += [f"  - {f}" for f in report["findings"]] or ["  (none)"]
    out += ["", "Warnings:"]
    out += [f"  - {w}" for w in report["warnings"]] or ["  (none)"]
    return "\n".join(out) + "\n"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|#]|^>)")


def _md(text: str) -> str:
    # Posts are user text: keep markdown from reading them as markup or table cells.
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _posts(count: int) -> str:
    return f"{count} post" if count == 1 else f"{count} posts"


def _png_names(names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "system"
        candidate, i = stem, 2
        while candidate in used:
            candidate, i = f"{stem}_{i}", i + 1
        used.add(candidate)
        out[name] = f"confusion_{candidate}.png"
    return out


def _plot_confusion(system: str, conf: Mapping[str, Any], path: Path) -> None:
    # Figure + Agg canvas directly: no pyplot global state, no GUI backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    matrix = np.asarray(conf["matrix"], dtype=float)
    rows, cols = conf["labels"], conf["columns"]
    fig = Figure(figsize=(2.5 + 1.4 * len(cols), 1.8 + 0.8 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    vmax = max(float(matrix.max()), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            ax.text(
                j,
                i,
                f"{int(value)}",
                ha="center",
                va="center",
                color="white" if value > vmax / 2 else "black",
            )
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("human")
    ax.set_title(f"{system}: human (rows) vs predicted (columns)")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.locator = MaxNLocator(integer=True)  # counts, not fractions
    colorbar.update_ticks()
    fig.savefig(path, dpi=110)


def render_markdown(
    report: Mapping[str, Any], *, out_dir: Path, title: str = "Held-out evaluation"
) -> Path:
    """Write ``report.md`` and one ``confusion_<system>.png`` per system into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(report["systems"])
    pngs = _png_names(names)

    md = [f"# {title}", "", _intro(report), "", "## Summary", ""]
    md.append("| metric | " + " | ".join(_md(n) for n in names) + " |")
    md.append("|---|" + "---|" * len(names))
    rows = _summary_rows(report)
    for label, cells in rows:
        md.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
    notes = _notes("\n".join(c for _, cells in rows for c in cells))
    md += ["", *notes] if notes else []
    sections = [
        ("Paired comparisons (same posts)", _paired_lines(report)),
        ("Agreement", _kappa_lines(report)),
        ("Findings", report["findings"]),
        ("Warnings", report["warnings"]),
    ]
    for heading, items in sections:
        md += ["", f"## {heading}", ""]
        md += [f"- {_md(item)}" for item in items] or ["(none)"]

    cal = report.get("calibration")
    if cal:
        _plot_reliability(cal, out_dir / RELIABILITY_PNG)
        md += ["", "## Score calibration", ""]
        md += [f"- {_md(line)}" for line in _calibration_lines(cal)]
        md += ["", *_reliability_table(cal)]
        md += ["", f"![Reliability diagram of the score]({RELIABILITY_PNG})"]

    for name in names:
        res = report["systems"][name]
        _plot_confusion(name, res["confusion"], out_dir / pngs[name])
        md += ["", f"## {_md(name)}", "", f"![Confusion matrix for {_md(name)}]({pngs[name]})"]
        md += ["", "### Top confusions", ""]
        if not res["top_confusions"]:
            md.append("(none)")
        for conf in res["top_confusions"]:
            predicted = NONE_COLUMN if conf["predicted"] is None else conf["predicted"]
            md.append(
                f"**human {_md(conf['human'])} \u2192 predicted {_md(predicted)}**: "
                f"{_posts(conf['count'])} ({conf['share_of_human_label']:.0%} of "
                f"{_md(conf['human'])})"
            )
            md.append("")
            for example in conf["examples"]:
                md += [f"> {_md(example)}", ""]

    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(md).rstrip() + "\n")
    return path


# ----------------------------------------------------------------------------- json


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(_to_jsonable(k)): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, np.ndarray)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        # Strict JSON has no NaN/Infinity.
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Atomically write ``report`` as JSON, converting numpy values to Python ones."""
    text = json.dumps(_to_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False)
    write_text_atomic(Path(path), text + "\n")
