"""Which pre-label the annotator sees, and the score it carries.

Pre-label: the LLM's label until a fine-tuned version is "better" than the LLM on the
judge posts of its own training run (`beats_llm`, below); from then on the model's. When
the preferred opinion is missing (the LLM failed, say) the other one is shown.

Score, stored as the prediction score: the estimated probability that the shown
pre-label is the label a human gives it, from the project's calibrator
(domain.calibration: a documented prior until the project has enough annotations, then a
fit on them). Lower = review first, and every model-vs-LLM disagreement scores below
every agreement (calibration's ordering rule).

Promotion and the switch from the LLM's label to the model's (`compare`): decided on
every judge post the project has now (a stable 15% of the training side, never trained on
by any version, never used to pick an epoch; it grows with the project), by who is right
on each post:
- a successor (trained on every post the serving version was, and more) serves unless
  the judge posts show it worse: the serving version is right where it is wrong so much
  more often than the reverse that chance explains such a lead with p < EVIDENCE_P
  (exact one-sided McNemar). More labels is the default; one lost post is no evidence;
- any other challenger (fewer or other labels, the same labels in another recipe: the
  fine-tune against its run's head) serves only when the judge posts show it better, by
  the same test the other way round: leaving the serving version needs evidence;
- annotators see the model's label instead of the LLM's once the model is right on more
  judge posts than the LLM (the point estimate: it only changes which label is offered
  first, each is reviewed, and each run decides again).
Thresholds at p < 0.2, not 0.05, on purpose: the 5-50 judge posts a young project has can
seldom show anything at 0.05, and the rule this replaced, which asked for that, froze the
version of the first 20 labels. The rule's error rates by judge size are simulated in
benchmarks/simulate_promotion.py (benchmarks/results/promotion_rule.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from backend.domain import calibration
from backend.domain.calibration import Calibrator


@dataclass(frozen=True)
class ModelOpinion:
    label: str
    probabilities: dict[str, float]

    @property
    def margin(self) -> float:
        top = [*sorted(self.probabilities.values(), reverse=True), 0.0]
        return float(top[0] - top[1])


@dataclass(frozen=True)
class Decision:
    label: str
    score: float
    source: str  # "llm" or "model"
    disagree: bool


def model_opinion(labels: list[str], probabilities: np.ndarray) -> ModelOpinion:
    return ModelOpinion(
        labels[int(np.argmax(probabilities))],
        {name: float(p) for name, p in zip(labels, probabilities, strict=True)},
    )


def decide(
    llm_label: str | None,
    llm_confidence: float | None,
    model: ModelOpinion | None,
    *,
    prefer_model: bool,
    calibrator: Calibrator | None = None,
) -> Decision | None:
    """The pre-label and its score, P(right) from `calibrator` (None: the prior); None when
    there is no opinion at all."""
    if llm_label is not None and (model is None or not prefer_model):
        label, source = llm_label, "llm"
    elif model is not None:
        label, source = model.label, "model"
    else:
        return None
    features = calibration.features(
        label,
        from_model=source == "model",
        llm_label=llm_label,
        llm_confidence=llm_confidence,
        model_label=model.label if model else None,
        model_probabilities=model.probabilities if model else None,
    )
    score = (calibrator or calibration.PRIOR).score(features)
    return Decision(label, score, source, disagree=features.regime == "disagree")


def accuracy(truth: Sequence[str], predicted: Sequence[str | None]) -> float | None:
    """Share of posts where the prediction equals the label (None is wrong); None when
    there are no posts."""
    if not truth:
        return None
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


@dataclass(frozen=True)
class Comparison:
    """Two systems on the same judge posts."""

    n: int  # judge posts
    new_right: int
    other_right: int
    new_only: int  # posts the new system gets right and the other wrong
    other_only: int  # the reverse
    p_worse: float  # exact one-sided McNemar: chance of the other winning this often
    p_better: float  # the same for the new system

    @property
    def verdict(self) -> str:
        """ "better", "worse" or "even": who is right on more judge posts."""
        if self.new_only > self.other_only:
            return "better"
        return "worse" if self.new_only < self.other_only else "even"

    def describe(self, other: str) -> str:
        relation = "even with" if self.verdict == "even" else f"{self.verdict} than"
        return (
            f"{relation} {other} on {self.n} judge posts (right on {self.new_right} vs "
            f"{self.other_right}; right where {other} was wrong: {self.new_only}, the "
            f"reverse: {self.other_only}; McNemar p = {self.p_better:.3g} for a lead "
            f"this large by chance, p = {self.p_worse:.3g} for {other}'s)"
        )


def compare(
    truth: Sequence[str], new: Sequence[str | None], other: Sequence[str | None]
) -> Comparison:
    """The paired comparison on the same posts (see the module docstring)."""
    rows = list(zip(truth, new, other, strict=True))
    new_only = sum(t == a and t != b for t, a, b in rows)
    other_only = sum(t != a and t == b for t, a, b in rows)
    discordant = new_only + other_only

    def p_of_a_lead(wins: int) -> float:
        if not discordant:
            return 1.0
        return round(float(stats.binomtest(wins, discordant, 0.5, alternative="greater").pvalue), 6)

    return Comparison(
        len(rows),
        sum(t == a for t, a, _ in rows),
        sum(t == b for t, _, b in rows),
        new_only,
        other_only,
        p_of_a_lead(other_only),
        p_of_a_lead(new_only),
    )


# How unlikely by chance a lead on the judge posts must be to count as shown: the serving
# version's, to keep a successor out; a challenger's, to let it in.
EVIDENCE_P = 0.2


def should_promote(against_serving: Comparison | None, *, successor: bool) -> bool:
    """Promote when nothing serves yet; a successor unless the judge posts show it worse,
    any other challenger only when they show it better."""
    if against_serving is None:
        return True
    if successor:
        return against_serving.p_worse >= EVIDENCE_P
    return against_serving.p_better < EVIDENCE_P


def beats_llm(against_llm: Comparison | None) -> bool:
    """Whether annotators see the model's label instead of the LLM's."""
    return against_llm is not None and against_llm.verdict == "better"
