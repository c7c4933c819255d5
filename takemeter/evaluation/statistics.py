"""Statistics of a held-out evaluation: pure functions of human labels and predictions.

Metrics (accuracy, macro-F1, Cohen's kappa); their intervals (Clopper-Pearson and Wilson
for shares, BCa bootstrap with an exact fallback for F1); two systems compared on the
same posts (McNemar, paired bootstrap of the differences); agreement among annotators
(Fleiss' kappa, Krippendorff's alpha); the confusion matrix and the most frequent errors.
Why each method: see :mod:`takemeter.evaluation`. A ``None`` prediction is always wrong.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats import contingency_tables, inter_rater

from backend.domain import policy

__all__ = [
    "BCA",
    "CLOPPER_PEARSON",
    "COHEN",
    "DEFAULT_RESAMPLING",
    "EXACT_FALLBACK",
    "EXACT_MCNEMAR_BELOW",
    "EXAMPLE_CHARS",
    "FLEISS",
    "KRIPPENDORFF",
    "NONE_COLUMN",
    "PAIRED_BCA",
    "WILSON",
    "Interval",
    "Prediction",
    "Resampling",
    "accuracy",
    "accuracy_ci",
    "bootstrap_ci",
    "cohen_kappa",
    "confusion",
    "f1_intervals",
    "fleiss_kappa",
    "inter_annotator_agreement",
    "krippendorff_alpha",
    "macro_f1",
    "mcnemar",
    "paired_differences",
    "proportion_ci",
    "top_confusions",
]

Prediction = str | None

NONE_COLUMN = "(none)"
# numpy/sklearn cannot mix None with strings, so None is swapped for this token.
# The NUL byte keeps it from ever colliding with a real label.
_MISSING = "\x00no-prediction"
EXAMPLE_CHARS = 200
# Below this many discordant pairs the chi-square approximation is poor.
EXACT_MCNEMAR_BELOW = 25
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
    return np.array(
        [len(labels) if v is None else index.get(v, len(labels)) for v in values], dtype=np.intp
    )


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
    share = policy.accuracy(y_true, y_pred)
    assert share is not None  # there are posts
    return share


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
