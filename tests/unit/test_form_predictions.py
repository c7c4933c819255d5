"""Unit tests for a form's pre-labels (backend.inference.predictor): the other questions'
regions beside the primary one's, scored with the least sure answer's P(right)."""

from __future__ import annotations

import pytest

from backend.config import load_settings
from backend.domain import calibration, policy, queue
from backend.domain.taxonomy import parse_form
from backend.inference.predictor import (
    Opinions,
    OtherAnswers,
    Predictor,
)
from backend.llm import questions
from backend.llm.cache import CachedAnswer
from backend.llm.labeler import LLMOpinion
from backend.llm.labeler import from_settings as labeler_from_settings

CONFIG = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
  <Choices name="topics" toName="text" choice="multiple">
    <Choice value="Politics" alias="pol"/><Choice value="Sports"/><Choice value="Business"/>
  </Choices>
  <Choices name="urgent" toName="text"><Choice value="yes"/><Choice value="no"/></Choices>
</View>
"""
FORM = parse_form(CONFIG)
SENTIMENT, TOPICS, URGENT = FORM.questions


@pytest.fixture
def predictor(tmp_path):
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "BLIND_LABELS": "false",
        }
    )
    made = Predictor(settings, labeler_from_settings(settings))
    yield made
    made.labeler.close()


def test_a_prediction_holds_every_question_answered(predictor):
    decisions = [
        policy.Decision("Positive", 0.95, "llm", disagree=False),
        None,
        policy.Decision("Negative", 0.4, "llm", disagree=False),
        None,
    ]
    others = [
        OtherAnswers(URGENT.result("yes"), 0.8),
        OtherAnswers(TOPICS.result_of_set(["Business"]), 0.6),
        None,
        None,
    ]
    tasks = [{"id": i, "data": {"text": f"post {i}"}} for i in range(4)]
    made = predictor.label_studio_predictions(SENTIMENT, "v", tasks, decisions, others)
    assert made[0] == {
        "result": SENTIMENT.result("Positive") + URGENT.result("yes"),
        "score": 0.8,
        "model_version": "v",
    }
    assert made[1] == {
        "result": TOPICS.result_of_set(["Business"]),
        "score": 0.6,
        "model_version": "v",
    }
    assert made[2] == {"result": SENTIMENT.result("Negative"), "score": 0.4, "model_version": "v"}
    assert made[3] is None
    # A one-question config's predictions are what they were: no others given.
    assert predictor.label_studio_predictions(SENTIMENT, "v", tasks[:1], decisions[:1]) == [
        {"result": SENTIMENT.result("Positive"), "score": 0.95, "model_version": "v"}
    ]


def test_answers_kept_for_a_form_read_back_per_question():
    answers = {
        "sentiment": questions.QuestionAnswer("Negative", 0.8),
        "topics": questions.QuestionAnswer(frozenset({"Sports"}), 0.5),
        "urgent": questions.QuestionAnswer(None, None),
    }
    kept = questions.encode(answers)
    assert questions.decode(kept, FORM.questions) == answers
    # Nothing usable: nothing kept (an answer off the list, asked no more).
    assert questions.encode({"sentiment": questions.QuestionAnswer(None, None)}) is None
    # A label renamed in the config since: no answer to that question.
    renamed = parse_form(CONFIG.replace('"Sports"', '"Football"')).questions
    assert questions.decode(kept, renamed)["topics"] == questions.QuestionAnswer(None, None)
    assert questions.decode("not json", FORM.questions)["sentiment"].answer is None


def cache(predictor: Predictor, text: str, answers: dict[str, questions.QuestionAnswer]) -> None:
    """The one request's answer for `text`, as the labeler keeps it for every question."""
    labeler = predictor.labeler
    kept = questions.encode(answers)
    labeler.cache.put(labeler.key(SENTIMENT, text), CachedAnswer(kept, None, ""), model="m")


def test_the_other_questions_answers_become_regions_scored_by_the_least_sure(predictor):
    """Post 0: a list at 0.7 and a label at 0.9, scored 0.7. Post 1: a list with no stated
    confidence (LLM_UNKNOWN) and a label off the list (no region). Post 2: not asked."""
    answer = questions.QuestionAnswer
    cache(
        predictor,
        "post 0",
        {
            "sentiment": answer("Positive", 0.8),
            "topics": answer(frozenset({"Sports", "Politics"}), 0.7),
            "urgent": answer("no", 0.9),
        },
    )
    cache(
        predictor,
        "post 1",
        {"sentiment": answer("Negative", None), "topics": answer(frozenset(), None)},
    )
    made = predictor.others(None, FORM, ["post 0", "post 1", "post 2"])
    assert made[0] == OtherAnswers(
        [*TOPICS.result_of_set(["Politics", "Sports"]), *URGENT.result("no")], 0.7
    )
    assert made[0].result[0]["value"] == {"choices": ["pol", "Sports"]}  # alias, config order
    assert made[1] == OtherAnswers(TOPICS.result_of_set([]), calibration.LLM_UNKNOWN)
    assert made[2] is None


def test_the_queue_rows_follow_the_least_sure_answer_of_every_question():
    """A task whose first question is sure (0.95) but whose other answer is not (0.4) is
    in the queue at 0.4, as Label Studio's tab orders it by the prediction's score."""
    sure = policy.Decision("Positive", 0.95, "llm", disagree=False)
    opinions = [Opinions(LLMOpinion("Positive", 0.95), None, sure)] * 2
    rows = queue.rows([1, 2], ["a", "b"], opinions, [0.95, 0.4])
    assert [(r["task"], r["priority"], r["in_queue"]) for r in rows] == [
        (2, 0.4, True),
        (1, 0.95, False),
    ]
    assert queue.rows([1], ["a"], opinions[:1])[0]["priority"] == 0.95  # one question
