"""Task roles and blind labeling (backend.domain.roles), on hand-computed cases."""

import pytest

from backend.domain import roles


def ids_where(predicate, count: int) -> list[int]:
    return [i for i in range(1, 10_000) if predicate(i)][:count]


def test_the_judge_posts_are_the_judge_share_of_split_roles() -> None:
    keys = [str(i) for i in range(1, 2001)]
    _, _, judge = roles.split_roles(
        keys, validation_share=roles.VALIDATION_SHARE, judge_share=roles.JUDGE_SHARE
    )
    assert [i + 1 for i in judge] == [i for i in range(1, 2001) if roles.is_judge_post(i)]
    assert 0.12 < len(judge) / 2000 < 0.18


def test_held_out_tasks_and_judge_posts_are_blind_and_the_rest_are_not() -> None:
    judge = ids_where(roles.is_judge_post, 1)[0]
    plain = ids_where(lambda i: not roles.is_judge_post(i), 1)[0]
    assert roles.is_blind({"id": judge, "data": {}}, holdout_percent=0)
    assert roles.is_blind({"id": plain, "data": {"split": "test"}}, holdout_percent=0)
    assert not roles.is_blind({"id": plain, "data": {}}, holdout_percent=0)
    # A task marked train is not held out, but a judge post stays one.
    assert roles.is_blind({"id": judge, "data": {"split": "train"}}, holdout_percent=100)


def test_blind_tasks_take_the_quantile_of_the_shown_scores_their_place_names() -> None:
    shown = [0.9, 0.1, 0.5, 0.7]  # sorted: 0.1 0.5 0.7 0.9
    tasks = ids_where(lambda i: True, 200)
    placed = roles.queue_scores(tasks, shown)
    for task, score in zip(tasks, placed, strict=True):
        assert score == sorted(shown)[int(roles.place(task) * 4)]
    # Spread over the queue, not bunched: each quarter gets a fair share of 200 tasks.
    for value in shown:
        assert 30 <= placed.count(value) <= 70
    assert roles.queue_scores([7, 8], []) == [roles.place(7), roles.place(8)]


def test_a_place_is_stable_and_uniform() -> None:
    places = [roles.place(i) for i in range(5000)]
    assert places == [roles.place(i) for i in range(5000)]
    assert min(places) >= 0 and max(places) < 1
    assert sum(places) / len(places) == pytest.approx(0.5, abs=0.02)
