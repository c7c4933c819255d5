"""The prediction score as a probability: P(the shown pre-label is the human's label).

Annotators read a prediction's score as the pre-label's chance of being right, so that is
what it is. A Calibrator maps what is known about a pre-label (the features below) to
that probability. Before a project has enough annotations it is the PRIOR, a fixed
documented formula; afterwards a logistic regression fitted on the project's own
annotations: the pre-label the serving policy shows for an annotated post against the
label the human gave it.

Features, all in [0, 1], relative to the shown label:
  llm_for        the LLM's confidence when its label is the shown one, else 0
  llm_against    the LLM's confidence when it chose another label, else 0
  model_for      the model's probability of the shown label (0 without a model)
  model_against  the model's highest probability among the other labels (0 without one);
                 model_for - model_against is the model's margin, signed
  agree          1 when both opinions exist and give the same label
  disagree       1 when both exist and differ
  from_model     1 when the shown label is the model's
An LLM answer without logprobs has confidence LLM_UNKNOWN.

Each pre-label falls in one regime: "llm" or "model" (one opinion), "agree" or
"disagree" (both).

PRIOR (used until the fit has MIN_EXAMPLES annotated pre-labels with at least
MIN_PER_OUTCOME right and MIN_PER_OUTCOME wrong; stated confidences at face value):
  one opinion  its confidence in its label (the LLM's confidence, the model's probability);
  agree        0.5 + 0.25 * (LLM confidence + model probability): two opinions that agree
               are right at least half the time, and the surer they are, the more often;
  disagree     0.25 * (shown opinion's confidence + 1 - other opinion's confidence): at
               most one of them is right, so it stays at or under one half;
clipped to [0.01, 0.99]: the prior never claims certainty.

Fit: L2-regularised logistic regression (C = REGULARISATION) on the seven features. A
regime the fit saw fewer than MIN_PER_REGIME times keeps the prior's formula: the
calibrator only speaks for the kinds of pre-label it has seen.

Disagreements first (the review order, kept on purpose at some cost in calibration):
every disagreement scores below every agreement. The calibrator stores a boundary (0.5
for the prior; for a fit, the lowest P(right) it gives any agreement it was fitted on);
an agreement scores at least the boundary, a disagreement at most the boundary less
1e-6. A fit that ranks disagreements first by itself is left untouched; otherwise this
lowers a disagreement's P(right) (more review, the safe direction) or raises a rare
agreement less certain than any seen. Evaluation measures the scores with the rule.

Pure: no I/O. brier(), ece() and reliability_bins() measure any such scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from backend.domain import dataset
from backend.domain.taxonomy import Taxonomy

FEATURES = (
    "llm_for",
    "llm_against",
    "model_for",
    "model_against",
    "agree",
    "disagree",
    "from_model",
)
REGIMES = ("llm", "model", "agree", "disagree")
LLM_UNKNOWN = 0.5  # no logprobs: as good as a coin toss, no better
# 30 annotated pre-labels: below that the fitted slopes mostly follow noise.
MIN_EXAMPLES = 30
# Fewer than 5 wrong (or right) pre-labels say too little about when they go wrong.
MIN_PER_OUTCOME = 5
MIN_PER_REGIME = 10
REGULARISATION = 1.0  # sklearn's C: the inverse of the L2 penalty on the weights
PRIOR_BOUNDARY = 0.5
PRIOR_RANGE = (0.01, 0.99)
GAP = 1e-6  # a disagreement's score stays at least this far under the boundary
PLACES = 6  # scores are rounded to this many decimals (and the boundary with them)
BINS = 10
VERSION = 1  # of the stored form; another one is not read


@dataclass(frozen=True)
class Features:
    """What the calibrator knows about one shown pre-label (see the module docstring)."""

    regime: str
    llm_for: float = 0.0
    llm_against: float = 0.0
    model_for: float = 0.0
    model_against: float = 0.0
    from_model: bool = False

    def vector(self) -> list[float]:
        return [
            self.llm_for,
            self.llm_against,
            self.model_for,
            self.model_against,
            float(self.regime == "agree"),
            float(self.regime == "disagree"),
            float(self.from_model),
        ]


def features(
    shown: str,
    *,
    from_model: bool,
    llm_label: str | None,
    llm_confidence: float | None,
    model_label: str | None,
    model_probabilities: Mapping[str, float] | None,
) -> Features:
    """The features of showing `shown`, given both opinions (either may be missing)."""
    has_llm = llm_label is not None
    has_model = model_label is not None and bool(model_probabilities)
    confidence = _unit(llm_confidence if llm_confidence is not None else LLM_UNKNOWN)
    if has_llm and has_model:
        regime = "agree" if llm_label == model_label else "disagree"
    else:
        regime = "model" if has_model else "llm"
    probabilities = dict(model_probabilities or {}) if has_model else {}
    others = [p for label, p in probabilities.items() if label != shown]
    return Features(
        regime=regime,
        llm_for=confidence if has_llm and llm_label == shown else 0.0,
        llm_against=confidence if has_llm and llm_label != shown else 0.0,
        model_for=_unit(probabilities.get(shown, 0.0)),
        model_against=_unit(max(others, default=0.0)),
        from_model=from_model,
    )


def _unit(value: float) -> float:
    value = float(value)
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def prior(f: Features) -> float:
    """The documented prior P(right), before the ordering rule."""
    if f.regime == "llm":
        p = f.llm_for
    elif f.regime == "model":
        p = f.model_for
    elif f.regime == "agree":
        p = 0.5 + 0.25 * (f.llm_for + f.model_for)
    else:
        shown, other = (
            (f.model_for, f.llm_against) if f.from_model else (f.llm_for, f.model_against)
        )
        p = 0.25 * (shown + 1.0 - other)
    return min(max(p, PRIOR_RANGE[0]), PRIOR_RANGE[1])


@dataclass(frozen=True)
class Calibrator:
    """Features -> P(right). Without weights it is the prior."""

    weights: tuple[float, ...] = ()  # one per FEATURES; empty for the prior
    intercept: float = 0.0
    regimes: tuple[str, ...] = ()  # scored by the fit; the others by the prior
    boundary: float = PRIOR_BOUNDARY  # agreements score >= this, disagreements below
    n: int = 0  # annotated pre-labels it was fitted on (or offered, for the prior)
    n_right: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # pre-labels per regime

    @property
    def kind(self) -> str:
        return "fitted" if self.weights else "prior"

    def raw(self, f: Features) -> float:
        """P(right) before the disagreements-first rule."""
        if not self.weights or f.regime not in self.regimes:
            return prior(f)
        z = self.intercept + sum(w * x for w, x in zip(self.weights, f.vector(), strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def score(self, f: Features) -> float:
        """P(right), with every disagreement below every agreement."""
        p = self.raw(f)
        if f.regime == "agree":
            p = max(p, self.boundary)
        elif f.regime == "disagree":
            p = min(p, max(self.boundary - GAP, 0.0))
        return round(p, PLACES)

    def describe(self) -> str:
        if not self.weights:
            return (
                f"prior (fitted once {MIN_EXAMPLES} annotated pre-labels, "
                f"{MIN_PER_OUTCOME} right and {MIN_PER_OUTCOME} wrong, are in; have "
                f"{self.n}, {self.n_right} right)"
            )
        return (
            f"fitted on {self.n} annotated pre-labels ({self.n_right} right; "
            f"regimes {', '.join(self.regimes) or 'none'}, the rest by the prior)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "kind": self.kind,
            "features": list(FEATURES),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "regimes": list(self.regimes),
            "boundary": self.boundary,
            "n": self.n,
            "n_right": self.n_right,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        """The calibrator to_dict wrote; ValueError for anything else."""
        try:
            if data.get("version") != VERSION:
                raise ValueError(f"stored form {data.get('version')!r}, not {VERSION}")
            weights = tuple(float(w) for w in data["weights"])
            if weights and list(data["features"]) != list(FEATURES):
                raise ValueError(f"features {data['features']!r}, not {list(FEATURES)}")
            if weights and len(weights) != len(FEATURES):
                raise ValueError(f"{len(weights)} weights for {len(FEATURES)} features")
            regimes = tuple(str(r) for r in data["regimes"])
            if not set(regimes) <= set(REGIMES):
                raise ValueError(f"unknown regimes in {regimes}")
            numbers = [*weights, float(data["intercept"]), float(data["boundary"])]
            if not all(math.isfinite(x) for x in numbers):
                raise ValueError("weights, intercept and boundary must be finite")
            return cls(
                weights,
                float(data["intercept"]),
                regimes,
                min(max(float(data["boundary"]), 0.0), 1.0),
                int(data["n"]),
                int(data["n_right"]),
                {str(k): int(v) for k, v in dict(data.get("counts") or {}).items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a stored calibrator: {exc!r}") from exc


PRIOR = Calibrator()


def load(stored: Mapping[str, Any] | None) -> Calibrator:
    """The stored calibrator (Registry.read_calibration), or the prior when there is none
    or it cannot be read (another stored form: the next fit replaces it)."""
    if stored is None:
        return PRIOR
    try:
        return Calibrator.from_dict(stored)
    except ValueError:
        return PRIOR


def fit(
    examples: Sequence[Features], right: Sequence[bool], *, regularisation: float = REGULARISATION
) -> Calibrator:
    """The calibrator for these annotated pre-labels: a fit when there are enough, else
    the prior (carrying the counts, so the reason can be told)."""
    if len(examples) != len(right):
        raise ValueError(f"{len(examples)} feature rows for {len(right)} outcomes")
    n, n_right = len(right), sum(bool(r) for r in right)
    counts = Counter(f.regime for f in examples)
    held = {r: counts[r] for r in REGIMES if counts[r]}
    if n < MIN_EXAMPLES or min(n_right, n - n_right) < MIN_PER_OUTCOME:
        return Calibrator(n=n, n_right=n_right, counts=held)
    from sklearn.linear_model import LogisticRegression  # only a fit needs sklearn

    model = LogisticRegression(C=regularisation, max_iter=1000)
    model.fit([f.vector() for f in examples], [int(bool(r)) for r in right])
    regimes = tuple(r for r in REGIMES if counts[r] >= MIN_PER_REGIME)
    fitted = Calibrator(
        tuple(float(w) for w in model.coef_[0]),
        float(model.intercept_[0]),
        regimes,
        n=n,
        n_right=n_right,
        counts=held,
    )
    if "agree" in regimes:
        lowest = min(fitted.raw(f) for f in examples if f.regime == "agree")
        # Rounded like the scores, so rounding cannot lift a disagreement to the boundary.
        fitted = Calibrator(
            fitted.weights, fitted.intercept, regimes, round(lowest, PLACES), n, n_right, held
        )
    return fitted


# Read-only views of inference.predictor.Opinions, so the domain needs no inference types.
class _LLM(Protocol):
    @property
    def label(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...


class _Model(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def probabilities(self) -> dict[str, float]: ...


class _Decision(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def disagree(self) -> bool: ...


class Scored(Protocol):
    """A task's opinions and decision (inference.predictor.Opinions)."""

    @property
    def llm(self) -> _LLM | None: ...
    @property
    def model(self) -> _Model | None: ...
    @property
    def decision(self) -> _Decision | None: ...


def features_of(item: Scored) -> Features | None:
    """The features of the pre-label `item` shows; None when it shows none."""
    decision = item.decision
    if decision is None:
        return None
    llm, model = item.llm, item.model
    return features(
        decision.label,
        from_model=decision.source == "model",
        llm_label=llm.label if llm is not None else None,
        llm_confidence=llm.confidence if llm is not None else None,
        model_label=model.label if model is not None else None,
        model_probabilities=model.probabilities if model is not None else None,
    )


def fit_from_tasks(
    tasks: Sequence[dict],
    taxonomy: Taxonomy,
    opinions: Callable[[list[str]], Sequence[Scored]],
    *,
    holdout_percent: int,
    usable: Callable[[int], bool] = lambda task: True,
    regularisation: float = REGULARISATION,
) -> Calibrator:
    """Fit on the annotated tasks of the training side: the pre-label the serving policy
    shows for each (`opinions` of their texts, e.g. the predictor from the answer cache)
    against the human label. Held-out tasks are left out so that evaluation measures the
    calibrator on posts it never saw; `usable(task id)` leaves out more (the posts the
    serving model trained on, whose probabilities would look surer than they are)."""
    examples = [
        e
        for e in dataset.labeled_examples(list(tasks), taxonomy, holdout_percent=holdout_percent)
        if usable(e.task_id)
    ]
    scored = opinions([e.text for e in examples]) if examples else []
    rows, right = [], []
    for example, item in zip(examples, scored, strict=True):
        f = features_of(item)
        if f is not None and item.decision is not None:
            rows.append(f)
            right.append(item.decision.label == example.label)
    return fit(rows, right, regularisation=regularisation)


# ------------------------------------------------------------------------ measures


def _checked(scores: Sequence[float], right: Sequence[bool]) -> list[tuple[float, float]]:
    if len(scores) != len(right):
        raise ValueError(f"{len(scores)} scores for {len(right)} outcomes")
    if not scores:
        raise ValueError("need at least one score")
    pairs = [(float(s), float(bool(r))) for s, r in zip(scores, right, strict=True)]
    if not all(0.0 <= s <= 1.0 for s, _ in pairs):
        raise ValueError("scores must be probabilities in [0, 1]")
    return pairs


def brier(scores: Sequence[float], right: Sequence[bool]) -> float:
    """Mean squared difference between P(right) and what happened (1 right, 0 wrong)."""
    pairs = _checked(scores, right)
    return sum((s - r) ** 2 for s, r in pairs) / len(pairs)


def _bin(score: float, bins: int) -> int:
    # Bins [k/bins, (k+1)/bins); the last one takes 1.0 too.
    return min(int(score * bins), bins - 1)


def reliability_bins(
    scores: Sequence[float], right: Sequence[bool], *, bins: int = BINS
) -> list[dict[str, Any]]:
    """Per equal-width bin of P(right): its range, how many scores fall in it, their mean
    and the share of those pre-labels that were right (None for an empty bin)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    pairs = _checked(scores, right)
    members: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for s, r in pairs:
        members[_bin(s, bins)].append((s, r))
    out = []
    for k, group in enumerate(members):
        n = len(group)
        out.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "n": n,
                "mean_score": sum(s for s, _ in group) / n if n else None,
                "share_right": sum(r for _, r in group) / n if n else None,
            }
        )
    return out


def ece(scores: Sequence[float], right: Sequence[bool], *, bins: int = BINS) -> float:
    """Expected calibration error: per bin |share right - mean P(right)|, weighted by the
    bin's share of the scores."""
    table = reliability_bins(scores, right, bins=bins)
    total = sum(b["n"] for b in table)
    return sum(b["n"] / total * abs(b["share_right"] - b["mean_score"]) for b in table if b["n"])
