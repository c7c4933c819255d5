"""A label config of several questions, pre-labeled through the real local LLM server
(llama.cpp): one request a post answers every question, JSON-constrained by the schema,
and the predictions pushed to (an in-process) Label Studio hold a region per question."""

from __future__ import annotations

import pytest

from backend.config import load_settings
from backend.domain.taxonomy import parse_form, parse_taxonomy
from backend.inference.predictor import Predictor
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.service.app import create_app
from backend.workflows.prelabel import prelabel_project
from tests.conftest import ROOT
from tests.doubles.label_studio import FakeLabelStudio

TWO_QUESTIONS = """
<View>
  <Text name="text" value="$text"/>
  <Header value="Read the post, then answer both questions."/>
  <Choices name="sentiment" toName="text" choice="single" showInline="true" required="true">
    <Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/>
  </Choices>
  <Choices name="topics" toName="text" choice="multiple">
    <Choice value="diet" hint="food, carbs, meals"/>
    <Choice value="insulin" alias="ins" hint="insulin doses, pumps, pens"/>
    <Choice value="exercise" hint="walking, running, the gym"/>
  </Choices>
</View>
"""
MULTI_LABEL_ONLY = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="topics" toName="text" choice="multiple">
    <Choice value="diet"/><Choice value="insulin"/><Choice value="exercise"/>
  </Choices>
</View>
"""
POSTS = [
    "I walked for an hour after dinner and my sugar came down nicely.",
    "Switched to a pump last month and I hate the tubing.",
    "Low carb breakfast every day, numbers look great!",
    "Is it normal to feel dizzy after my evening insulin shot?",
]


@pytest.fixture
def predictor(tmp_path, llm_url, tiny_model):
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LLM_BASE_URL": llm_url,
            "LLM_MODEL": "smollm2-135m-instruct",
            "LLM_CACHE": str(tmp_path / "answers.sqlite"),
            "LLM_CONCURRENCY": "4",
            "BASE_MODEL": str(tiny_model),
            "BLIND_LABELS": "false",
            "PRELABEL_BATCH": "2",
        }
    )
    made = Predictor(settings, labeler_from_settings(settings))
    yield made
    made.labeler.close()


def answers(result: list[dict], config: str) -> dict:
    """Each question's answer in a prediction's result (None: no region for it)."""
    out = {}
    for question in parse_form(config).questions:
        out[question.from_name] = (
            question.labels_of(result) if question.multiple else question.label_of(result)
        )
    return out


def test_the_prelabel_job_pushes_every_question_from_one_request_a_post(predictor):
    fake = FakeLabelStudio()
    project = fake.add_project(TWO_QUESTIONS)
    ids = [fake.add_task(project, text) for text in POSTS]

    counts = prelabel_project(fake, predictor, predictor.settings, project, lambda **_: None)

    assert (counts["to_label"], counts["done"], counts["failed"]) == (4, 4, 0)
    usage = predictor.labeler.cache.usage()
    assert usage["llm_calls"] == len(POSTS)  # one request a post for both questions
    predictions = {p.task: p for p in fake.predictions_of(project)}
    assert sorted(predictions) == sorted(ids)
    for prediction in predictions.values():
        found = answers(prediction.result, TWO_QUESTIONS)
        # The schema confines each answer to its question's labels: both are there.
        assert found["sentiment"] in ("Positive", "Negative", "Neutral"), prediction.result
        assert found["topics"] is not None and found["topics"] <= {"diet", "insulin", "exercise"}
        assert [r["from_name"] for r in prediction.result] == ["sentiment", "topics"]
        assert 0.0 < prediction.score < 1.0
    # The primary question is the one a run trains on; its answers are those same ones,
    # read from the cache (nothing asked again).
    sentiment = parse_taxonomy(TWO_QUESTIONS)
    cached = predictor.labeler.cached(sentiment, POSTS)
    assert [o.label if o else None for o in cached] == [
        answers(predictions[i].result, TWO_QUESTIONS)["sentiment"] for i in ids
    ]
    assert predictor.labeler.cache.usage()["llm_calls"] == len(POSTS)


def test_predict_answers_a_multi_label_config_and_keeps_one_question_keys(predictor):
    app = create_app(predictor.settings, predictor=predictor).test_client()
    tasks = [{"id": i, "data": {"text": text}} for i, text in enumerate(POSTS[:2])]

    response = app.post("/predict", json={"tasks": tasks, "label_config": MULTI_LABEL_ONLY})

    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert response.json["model_version"] == "zero-shot:smollm2-135m-instruct"
    for result in results:
        topics = answers(result["result"], MULTI_LABEL_ONLY)["topics"]
        assert topics is not None and topics <= {"diet", "insulin", "exercise"}
    assert predictor.labeler.cache.usage()["llm_calls"] == 2
    # The demo's one-question config is asked with its own prompt and keys, as before.
    demo = (ROOT / "label_config.xml").read_text()
    labeler = predictor.labeler
    demo_key = labeler.key(parse_taxonomy(demo), POSTS[0])
    assert parse_taxonomy(demo).form == () and demo_key != labeler.key(
        parse_taxonomy(MULTI_LABEL_ONLY.replace('choice="multiple"', "")), POSTS[0]
    )
