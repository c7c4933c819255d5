"""What annotators had in view (backend.domain.labelings) and the pre-label report's
figures (takemeter.evaluation.prelabels), on hand-computed cases."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from backend.domain import labelings
from backend.domain.labelings import LLM, Labeling
from backend.domain.taxonomy import parse_taxonomy
from backend.llm.labeler import Spent
from takemeter.evaluation import prelabels
from takemeter.evaluation.prelabels import Prices

TAXONOMY = parse_taxonomy((Path(__file__).parents[2] / "label_config.xml").read_text())
PE, HC, SS = TAXONOMY.names
IDS = itertools.count(1000)
EARLY, LATE = "2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+00:00"


def result(label: str, origin: str | None = None) -> list[dict]:
    regions = TAXONOMY.result(label)
    return [{**r, "origin": origin} if origin else r for r in regions]


def prediction(pid: int, version: str, label: str | None) -> dict:
    return {
        "id": pid,
        "model_version": version,
        "result": result(label) if label else [],
        "score": 0.5,
        "created_at": EARLY,
    }


def annotation(label: str, *, parent=None, origin=None, seconds=12.0, by=1, cancelled=False):
    return {
        "id": next(IDS),
        "completed_by": by,
        "result": result(label, origin),
        "parent_prediction": parent,
        "lead_time": seconds,
        "was_cancelled": cancelled,
        "created_at": LATE,
    }


def task(tid: int, predictions: list[dict], annotations: list[dict], split: str = "train"):
    return {
        "id": tid,
        "data": {"text": f"post {tid}", "split": split},
        "predictions": predictions,
        "annotations": annotations,
    }


def item(outcome: str, *, source=LLM, shown=PE, label=PE, seconds=10.0, by=1, task=1):
    return Labeling(task, by, label, seconds, outcome, source, shown, held_out=False)


def test_each_annotation_is_read_as_accepted_changed_ignored_or_blind() -> None:
    tasks = [
        task(
            1, [prediction(10, "zero-shot:m", PE)], [annotation(PE, parent=10, origin="prediction")]
        ),
        task(2, [prediction(20, "v2 head 80%/30", HC)], [annotation(SS, parent=20)]),
        task(3, [prediction(30, "zero-shot:m", SS)], [annotation(PE, origin="manual")]),
        task(4, [prediction(40, "v2 head 80%/30", None)], [annotation(HC, parent=40)], "test"),
        task(5, [], [annotation(HC)]),
        task(6, [prediction(60, "zero-shot:m", PE)], [annotation(PE, cancelled=True)]),
        # No parent, but made from the pre-label (Label Studio's region origin says so).
        task(7, [prediction(70, "zero-shot:m", HC)], [annotation(HC, origin="prediction")]),
    ]
    found = {i.task: i for i in labelings.labelings(tasks, TAXONOMY, holdout_percent=0)}
    assert sorted(found) == [1, 2, 3, 4, 5, 7]
    assert (found[1].outcome, found[1].source, found[1].shown) == ("accepted", LLM, PE)
    assert (found[2].outcome, found[2].source, found[2].label) == ("changed", "v2 head 80%/30", SS)
    assert (found[3].outcome, found[3].source) == ("ignored", LLM)
    assert (found[4].outcome, found[4].source, found[4].held_out) == ("blind", None, True)
    assert found[5].outcome == "blind" and not found[5].held_out
    assert found[7].outcome == "accepted"
    assert found[1].seconds == 12.0


def test_acceptance_shares_carry_exact_intervals() -> None:
    items = [item("accepted"), item("ignored"), item("changed", source="v3", label=SS)]
    figures = prelabels.acceptance(items)
    assert list(figures) == [LLM, "v3"]
    llm = figures[LLM]
    assert llm["n"] == 2 and llm["accepted"]["share"] == 0.5
    # Clopper-Pearson for 1 of 2: [1 - sqrt(0.975), sqrt(0.975)].
    assert llm["accepted"]["interval"] == pytest.approx([1 - 0.975**0.5, 0.975**0.5])
    assert llm["changed"]["count"] == 0 and llm["changed"]["interval"][0] == 0.0
    assert figures["v3"]["changed"]["share"] == 1.0


def test_time_saved_is_the_difference_of_medians_and_scales_to_the_remaining_tasks() -> None:
    items = [item("blind", source=None, shown=None, seconds=s) for s in (10, 20, 30, 40, 50)]
    items += [item("accepted", seconds=s) for s in (5, 5, 10, 10, 15)]
    times = prelabels.annotation_time(items, remaining=360)
    assert times["blind"] == {"n": 5, "median_seconds": 30.0}
    assert times["prelabeled"] == {"n": 5, "median_seconds": 10.0}
    saved = times["saved_per_task"]
    assert saved["difference"] == 20.0
    low, high = saved["interval"]
    assert low <= 20.0 <= high and low >= -10 and high <= 45  # medians of 5 move in steps
    assert times["saved_hours_remaining"]["hours"] == pytest.approx(2.0)  # 20 s x 360


def test_a_constant_difference_has_a_point_interval_and_too_few_times_none() -> None:
    same = prelabels.median_difference([30.0] * 6, [10.0] * 6)
    assert same["difference"] == 20.0 and same["interval"] == [20.0, 20.0]
    few = prelabels.annotation_time([item("blind", source=None, shown=None)], remaining=10)
    assert few["saved_per_task"] is None and "too few" in few["note"]


def test_the_difference_of_two_shares_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17: 56/70 - 48/80, method 10.
    found = prelabels.difference_of_shares(56, 70, 48, 80)
    assert found["difference"] == pytest.approx(0.2)
    assert found["interval"] == pytest.approx([0.0524, 0.3339], abs=5e-4)


def test_anchoring_compares_agreement_with_the_suggestion_shown_and_on_blind_labels() -> None:
    assisted = [item("accepted", task=t) for t in (1, 2, 3)] + [item("changed", label=SS, task=4)]
    blind = [item("blind", source=None, shown=None, label=PE, task=t) for t in (5, 6, 7, 8)]
    answers = {LLM: {5: PE, 6: PE, 7: SS, 8: HC}}
    found = prelabels.anchoring(assisted + blind, answers)[LLM]
    assert (found["assisted"]["count"], found["assisted"]["n"]) == (3, 4)
    assert (found["blind"]["count"], found["blind"]["n"]) == (2, 4)
    assert found["difference"]["difference"] == pytest.approx(0.25)
    assert found["difference"]["interval"][0] < 0.25 < found["difference"]["interval"][1]


def test_money_adds_tokens_at_the_prices_and_lead_times_at_the_rate() -> None:
    items = [item("accepted", task=t) for t in (1, 2, 3)] + [item("changed", label=SS)]
    times = {"prelabeled": {"median_seconds": 10.0}, "blind": {"median_seconds": 30.0}}
    found = prelabels.money(
        items,
        spent=Spent(100, prompt_tokens=1_000_000, completion_tokens=100_000, without_counts=0),
        prices=Prices(input_per_million=0.15, output_per_million=0.60, hourly_rate=36.0),
        times=times,
    )
    assert found["llm_cost"] == pytest.approx(0.21)  # 0.15 + 0.1 x 0.60
    assert found["cost_per_correct_prelabel"] == pytest.approx(0.07)  # 3 accepted
    assert found["cost_per_label_with_prelabels"] == pytest.approx(0.0021 + 0.1)
    assert found["cost_per_label_blind"] == pytest.approx(0.3)
    unpriced = prelabels.money(items, spent=Spent(1, 5, 1, 0), prices=Prices(), times=times)
    assert unpriced["llm_cost"] is None and unpriced["cost_per_label_blind"] is None


def test_annotators_with_few_labels_are_pooled_and_not_named() -> None:
    items = [item("accepted", by=7, task=t) for t in range(5)]
    items += [item("changed", label=SS, by=8, task=10), item("accepted", by=9, task=11)]
    found = prelabels.per_annotator(items, remaining=0)
    assert list(found) == ["annotator 7", "others (2 with fewer than 5 labels)"]
    assert found["annotator 7"]["labels"] == 5
    assert found["others (2 with fewer than 5 labels)"]["acceptance"][LLM]["n"] == 2
    assert "8" not in " ".join(found) and "9" not in " ".join(found)


def test_held_out_labels_are_counted_by_what_was_in_view() -> None:
    items = [
        Labeling(1, 1, PE, 5.0, "blind", None, None, held_out=True),
        Labeling(2, 1, PE, 5.0, "accepted", LLM, PE, held_out=True),
        Labeling(3, 1, PE, 5.0, "accepted", LLM, PE, held_out=False),
    ]
    assert prelabels.assisted_held_out(items) == {"blind": 1, "with a LLM pre-label": 1}


def test_the_card_headline_says_the_accepted_share_the_time_saved_and_the_cost() -> None:
    items = [item("accepted", seconds=s, task=s) for s in (4, 6)]
    items += [item("changed", source="v2", label=SS, seconds=8, task=8)]
    items += [item("blind", source=None, shown=None, seconds=s, task=s) for s in (12, 20)]
    assert labelings.headline(items, llm_cost=0.5) == (
        "pre-labels accepted 67% (2 of 3), 10.0 s saved a task (2 blind, 3 timed), "
        "0.25 an accepted LLM pre-label"  # medians 16 and 6; 0.5 for 2 accepted
    )
    # With an hourly rate of 36: 6 s is 0.06 and 16 s 0.16, plus 0.5 / 10 posts answered.
    assert labelings.headline(items, llm_cost=0.5, answered_posts=10, hourly_rate=36.0).endswith(
        ", 0.25 an accepted LLM pre-label, a label 0.11 with pre-labels, 0.16 blind"
    )
    assert labelings.headline(items[:3]) == "pre-labels accepted 67% (2 of 3)"
    assert labelings.headline(items[3:]) == ""  # nothing shown yet
