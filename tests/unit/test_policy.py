"""Unit tests for backend.domain.policy: which pre-label is shown and its review priority."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from backend.domain.calibration import Calibrator
from backend.domain.policy import (
    EVIDENCE_P,
    Decision,
    ModelOpinion,
    beats_llm,
    compare,
    decide,
    model_opinion,
    should_promote,
)
from backend.domain.queue import QUEUE_BELOW

SS, HC, PE = "seeking_support", "health_claim", "personal_experience"


def opinion(label: str, **probabilities: float) -> ModelOpinion:
    return ModelOpinion(label, probabilities)


# --- ModelOpinion and model_opinion -------------------------------------------------


def test_margin_is_top_two_difference():
    assert opinion(HC, a=0.7, b=0.2, c=0.1).margin == pytest.approx(0.5)
    assert opinion(HC, a=0.1, b=0.3, c=0.6).margin == pytest.approx(0.3)
    assert opinion(HC, a=0.5, b=0.5).margin == 0.0
    assert opinion(HC, a=1.0).margin == 1.0  # a single label: second best counts as 0


def test_model_opinion_picks_argmax():
    result = model_opinion([SS, HC, PE], np.array([0.2, 0.5, 0.3], dtype=np.float32))
    assert result.label == HC
    assert list(result.probabilities) == [SS, HC, PE]
    assert result.probabilities[PE] == pytest.approx(0.3)
    assert all(type(p) is float for p in result.probabilities.values())
    assert result.margin == pytest.approx(0.2)


def test_model_opinion_length_mismatch_raises():
    with pytest.raises(ValueError):
        model_opinion([SS, HC], np.array([0.2, 0.5, 0.3]))


# --- decide: every branch (scores from the prior, domain.calibration) -----------------


def test_no_opinion_gives_none():
    assert decide(None, None, None, prefer_model=False) is None
    assert decide(None, 0.9, None, prefer_model=True) is None


def test_llm_only_scores_its_confidence():
    assert decide(HC, 0.8, None, prefer_model=False) == Decision(HC, 0.8, "llm", False)
    # prefer_model does not matter when there is no model
    assert decide(HC, 0.8, None, prefer_model=True) == Decision(HC, 0.8, "llm", False)


def test_llm_only_unknown_confidence_scores_half():
    assert decide(HC, None, None, prefer_model=False) == Decision(HC, 0.5, "llm", False)


def test_model_only_scores_its_probability():
    model = opinion(PE, **{SS: 0.1, HC: 0.3, PE: 0.6})
    decision = decide(None, None, model, prefer_model=False)
    assert decision == Decision(PE, 0.6, "model", False)
    # a confidence without an LLM label is ignored
    assert decide(None, 0.05, model, prefer_model=True) == Decision(PE, 0.6, "model", False)


def test_agreement_scores_half_plus_a_quarter_of_both_confidences():
    model = opinion(HC, **{SS: 0.1, HC: 0.7, PE: 0.2})
    # 0.5 + 0.25 * (0.8 + 0.7) = 0.875, whichever label is preferred
    assert decide(HC, 0.8, model, prefer_model=False) == Decision(HC, 0.875, "llm", False)
    assert decide(HC, 0.8, model, prefer_model=True) == Decision(HC, 0.875, "model", False)
    # 0.5 + 0.25 * (0.3 + 0.7) = 0.75
    assert decide(HC, 0.3, model, prefer_model=False).score == pytest.approx(0.75)


def test_disagreement_scores_the_shown_label_against_the_other_opinion():
    model = opinion(PE, **{SS: 0.05, HC: 0.15, PE: 0.8})
    # the LLM's HC shown: 0.25 * (0.9 + 1 - 0.8) = 0.275
    llm_first = decide(HC, 0.9, model, prefer_model=False)
    assert llm_first == Decision(HC, 0.275, "llm", True)
    # the model's PE shown: 0.25 * (0.8 + 1 - 0.9) = 0.225
    model_first = decide(HC, 0.9, model, prefer_model=True)
    assert model_first == Decision(PE, 0.225, "model", True)
    # a less sure LLM makes its label less likely: 0.25 * (0.4 + 0.2) = 0.15
    assert decide(HC, 0.4, model, prefer_model=False).score == pytest.approx(0.15)


def test_unknown_llm_confidence_counts_as_a_coin_toss():
    model = opinion(HC, **{SS: 0.2, HC: 0.6, PE: 0.2})
    # agree: 0.5 + 0.25 * (0.5 + 0.6) = 0.775; disagree: 0.25 * (0.5 + 1 - 0.6) = 0.225
    assert decide(HC, None, model, prefer_model=False) == Decision(HC, 0.775, "llm", False)
    assert decide(SS, None, model, prefer_model=False) == Decision(SS, 0.225, "llm", True)
    # the model's HC shown against the LLM's SS: 0.25 * (0.6 + 1 - 0.5) = 0.275
    assert decide(SS, None, model, prefer_model=True) == Decision(HC, 0.275, "model", True)


def test_scores_are_rounded_to_six_places():
    model = opinion(HC, **{HC: 0.7, SS: 0.2})
    assert decide(HC, 1 / 3, model, prefer_model=False).score == 0.758333


def test_a_given_calibrator_scores_instead_of_the_prior():
    # Logistic in llm_for alone: P(right) = 1 / (1 + e^-(2c - 1)); at c = 0.5 exactly 0.5.
    fitted = Calibrator(weights=(2.0, 0, 0, 0, 0, 0, 0), intercept=-1.0, regimes=("llm",))
    assert decide(HC, 0.5, None, prefer_model=False, calibrator=fitted).score == 0.5
    at_one = decide(HC, 1.0, None, prefer_model=False, calibrator=fitted).score
    assert at_one == round(1 / (1 + math.exp(-1)), 6)
    assert decide(HC, 1.0, None, prefer_model=False).score == 0.99  # the prior's cap


def test_confident_agreement_is_out_of_the_queue_and_disagreement_in():
    assert QUEUE_BELOW == 0.8
    sure = opinion(HC, **{HC: 0.95, SS: 0.05})
    assert decide(HC, 0.95, sure, prefer_model=False).score >= QUEUE_BELOW
    assert decide(SS, 0.95, sure, prefer_model=False).score < QUEUE_BELOW
    # an agreement of two unsure opinions is worth a look: 0.5 + 0.25 * (0.55 + 0.55)
    unsure = opinion(HC, **{HC: 0.55, SS: 0.45})
    assert decide(HC, 0.55, unsure, prefer_model=False).score < QUEUE_BELOW


# --- the ordering property ----------------------------------------------------------

GRID = [i / 20 for i in range(1, 20)]  # 0.05 .. 0.95
TOP = [0.4, 0.55, 0.7, 0.85, 0.99]  # model top probabilities (second = 1 - top, two labels)


def _scores(agree: bool) -> list[float]:
    scores = []
    for llm_conf, top in itertools.product([*GRID, None], TOP):
        model = opinion(HC if top >= 0.5 else SS, **{HC: top, SS: 1 - top})
        llm_label = model.label if agree else (SS if model.label == HC else HC)
        decision = decide(llm_label, llm_conf, model, prefer_model=False)
        assert decision.disagree is (not agree)
        scores.append(decision.score)
    return scores


def test_every_disagreement_scores_below_every_agreement():
    agreements, disagreements = _scores(agree=True), _scores(agree=False)
    assert max(disagreements) < min(agreements)
    assert all(0.0 <= s <= 1.0 for s in agreements + disagreements)


def test_disagreement_below_agreement_at_the_extremes():
    certain = opinion(HC, **{HC: 1.0, SS: 0.0})  # margin 1.0, e.g. a saturated softmax
    tied = opinion(HC, **{HC: 0.5, SS: 0.5})  # margin 0.0
    disagreement = decide(SS, 1.0, certain, prefer_model=False)
    agreement = decide(HC, 0.9, tied, prefer_model=False)
    assert disagreement.disagree and not agreement.disagree
    assert disagreement.score < agreement.score


# --- the paired promotion rule ---------------------------------------------------------


def _case(n: int, new_only: int, other_only: int, both: int) -> tuple[list, list, list]:
    """n posts: new right & other wrong, the reverse, both right, the rest both wrong."""
    truth = ["a"] * n
    new = ["a"] * new_only + ["b"] * other_only + ["a"] * both
    other = ["b"] * new_only + ["a"] * other_only + ["a"] * both
    rest = n - len(new)
    return truth, new + ["b"] * rest, other + ["b"] * rest


def test_compare_counts_who_is_right_where_they_differ():
    result = compare(*_case(40, new_only=8, other_only=0, both=30))
    assert result.verdict == "better"
    assert (result.new_only, result.other_only, result.n) == (8, 0, 40)
    assert (result.new_right, result.other_right) == (38, 30)
    assert result.p_worse == 1.0  # the other never won: nothing says it is better
    assert result.p_better == pytest.approx(0.5**8, abs=1e-6)
    assert compare(*_case(40, new_only=0, other_only=8, both=30)).p_worse == pytest.approx(
        0.5**8, abs=1e-6
    )  # exact one-sided McNemar
    assert compare(*_case(10, new_only=2, other_only=2, both=3)).verdict == "even"


def test_a_successor_on_thin_evidence_serves():
    """The case that froze projects: a version trained on more labels, one post behind
    on a few judge posts. One lost post is no evidence; it serves."""
    thin = compare(*_case(9, new_only=0, other_only=1, both=7))
    assert thin.verdict == "worse" and thin.p_worse == 0.5
    assert should_promote(thin, successor=True)
    even = compare(*_case(28, new_only=6, other_only=8, both=10))  # 6 vs 8 discordant
    assert should_promote(even, successor=True)


def test_a_clearly_worse_successor_is_kept_out_with_the_evidence_spelled_out():
    worse = compare(*_case(30, new_only=1, other_only=7, both=20))
    assert worse.p_worse < EVIDENCE_P
    assert not should_promote(worse, successor=True)
    described = worse.describe("v1 head 75%/4")
    assert described.startswith("worse than v1 head 75%/4 on 30 judge posts")
    assert "right on 21 vs 27" in described and "the reverse: 7" in described
    # Three losses and no win are already enough at the rule's threshold.
    assert not should_promote(compare(*_case(5, new_only=0, other_only=3, both=1)), successor=True)


def test_a_clearly_better_candidate_serves_in_every_role():
    better = compare(*_case(30, new_only=7, other_only=1, both=20))
    assert should_promote(better, successor=True)
    assert should_promote(better, successor=False)
    assert beats_llm(better)


def test_a_challenger_on_fewer_labels_serves_only_when_shown_better():
    assert not should_promote(
        compare(*_case(20, new_only=3, other_only=3, both=10)), successor=False
    )  # even: the serving version stays
    # One post ahead is no evidence either (p = 0.5 for a 4-to-3 lead by chance).
    assert not should_promote(
        compare(*_case(20, new_only=4, other_only=3, both=10)), successor=False
    )
    shown = compare(*_case(20, new_only=6, other_only=1, both=10))
    assert shown.p_better == pytest.approx(8 / 128, abs=1e-6) and shown.p_better < EVIDENCE_P
    assert should_promote(shown, successor=False)


def test_the_llm_switch_needs_more_judge_posts_right_than_the_llm():
    """The point estimate: the switch only changes which label is offered first."""
    assert not beats_llm(compare(*_case(10, new_only=2, other_only=2, both=5)))
    assert beats_llm(compare(*_case(5, new_only=2, other_only=1, both=1)))
    assert not beats_llm(None)


def test_nothing_serving_yet_promotes_and_no_judge_posts_decide_nothing():
    assert should_promote(None, successor=False)
    empty = compare([], [], [])
    assert empty.verdict == "even" and not beats_llm(empty)
    assert should_promote(empty, successor=True)  # no evidence against a successor
    assert not should_promote(empty, successor=False)
