"""The bulk pre-labeling job and the answer cache's claims, against an in-process Label
Studio (tests/doubles/label_studio.py), an HTTP stand-in for a hosted LLM, and a real Redis."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from backend.config import load_settings
from backend.domain.jobs import Kind
from backend.domain.taxonomy import parse_taxonomy
from backend.inference.predictor import Predictor
from backend.jobs.lane import work
from backend.jobs.state import JobState
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.workflows.prelabel import PrelabelFailures, prelabel_project
from tests.conftest import REDIS_URL, ROOT
from tests.doubles.label_studio import FakeLabelStudio
from tests.doubles.llm_endpoint import MisbehavingLLM

LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
TAXONOMY = parse_taxonomy(LABEL_CONFIG)


def scripted(prompt: str) -> str:
    if "?" in prompt:
        return "seeking_support"
    return "health_claim" if "cure" in prompt else "personal_experience"


def make_predictor(tmp_path, llm: MisbehavingLLM, **env: str) -> Predictor:
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LLM_BASE_URL": llm.url,
            "LLM_MODEL": "hosted",
            "LLM_MAX_RETRIES": "0",
            "LLM_TIMEOUT": "5",
            "LLM_CONCURRENCY": "4",
            "PRELABEL_BATCH": "4",
            # Every task's pre-label is checked; tests/e2e/test_blind.py runs the default.
            "BLIND_LABELS": "false",
            **env,
        }
    )
    return Predictor(settings, labeler_from_settings(settings))


@pytest.fixture
def llm():
    with MisbehavingLLM("scripted", answer=scripted) as double:
        yield double


@pytest.fixture
def fake() -> FakeLabelStudio:
    return FakeLabelStudio()


def test_answers_gather_behind_a_slow_label_studio_into_fewer_imports(tmp_path, fake):
    """Label Studio 1.23 updates every task of the project on each import by default,
    so a slow one gets fewer, larger imports; the LLM is not held up meanwhile."""
    project = fake.add_project(LABEL_CONFIG)
    ids = [fake.add_task(project, f"my numbers today, day {i}") for i in range(60)]
    store = fake.projects.import_predictions

    def slow_import(*args, **kwargs):
        time.sleep(0.5)
        return store(*args, **kwargs)

    fake.projects.import_predictions = slow_import
    with MisbehavingLLM("scripted", answer=scripted, latency=0.02) as llm:
        predictor = make_predictor(tmp_path, llm, LLM_CONCURRENCY="8")
        counts = prelabel_project(fake, predictor, predictor.settings, project, lambda **_: None)

    assert counts["done"] == 60 and llm.requests == 60
    sizes = [len(call["request"]) for call in fake.called("projects.import_predictions")]
    assert sum(sizes) == 60 and sorted(p.task for p in fake.predictions_of(project)) == ids
    # 60 answers in about 0.2 s, each import 0.5 s: batches of PRELABEL_BATCH (4) would
    # be 15 imports and 7.5 s; gathering makes a handful, none over 10 batches.
    assert len(sizes) < 15 / 2 and max(sizes) <= 10 * 4, sizes
    assert counts["llm_seconds"] < counts["seconds"]  # answers were in before the pushes


def test_every_unlabeled_task_gets_one_prediction_in_batches(tmp_path, llm, fake):
    project = fake.add_project(LABEL_CONFIG)
    texts = [f"my numbers today, day {i}" for i in range(6)] + [
        "does cinnamon cure diabetes?",
        "cinnamon will cure you",
        "my numbers today, day 0",
    ]
    ids = [fake.add_task(project, text) for text in texts]
    fake.add_task(project, "already annotated", label="personal_experience")
    fake.add_task(project, None, data={"other": "no text"})
    predictor = make_predictor(tmp_path, llm)
    reports: list[dict] = []

    counts = prelabel_project(
        fake, predictor, predictor.settings, project, lambda **fields: reports.append(fields)
    )

    assert (counts["tasks"], counts["to_label"], counts["done"], counts["failed"]) == (11, 9, 9, 0)
    assert llm.requests == 8  # 9 tasks, 8 distinct texts: each asked once
    pushed = fake.called("projects.import_predictions")
    sizes = [len(call["request"]) for call in pushed]
    # A push once PRELABEL_BATCH (4) are in, then what came. The text of two tasks answers
    # both at once, so the first push holds 5 when that answer is the 4th to come.
    assert sizes[0] in (4, 5) and sum(sizes) == 9, sizes
    predictions = {p.task: p for p in fake.predictions_of(project)}
    assert sorted(predictions) == sorted(ids)
    assert {
        TAXONOMY.label_of(predictions[ids[6]].result),
        TAXONOMY.label_of(predictions[ids[7]].result),
    } == {"seeking_support", "health_claim"}
    assert all(p.model_version == "zero-shot:hosted" for p in predictions.values())
    assert reports[0]["state"] == "running" and reports[-1]["done"] == 9

    # Run again: nothing to do, nothing asked, nothing pushed.
    again = prelabel_project(fake, predictor, predictor.settings, project, lambda **_: None)
    assert (again["to_label"], llm.requests, len(fake.predictions_of(project))) == (0, 8, 9)
    predictor.labeler.close()


def run_prelabel_lane(fake, predictor, project: int, *, sleep) -> JobState:
    """ "tasks imported", then the pre-labeling lane run as a runner runs it."""
    state = JobState(predictor.settings.model_dir)
    state.request(project, "tasks imported", kind=Kind.PRELABEL)
    lease = state.acquire(project, "prelabel")
    assert lease is not None
    work(predictor.settings, state, lease, client=fake, predictor=predictor, sleep=sleep)
    return state


def test_a_dead_llm_is_retried_with_back_off_and_the_reason_is_shown(tmp_path, fake):
    project = fake.add_project(LABEL_CONFIG)
    for i in range(3):
        fake.add_task(project, f"post {i}")
    with MisbehavingLLM("error") as dead:
        predictor = make_predictor(tmp_path, dead, JOB_RETRIES="3")
        with pytest.raises(PrelabelFailures):
            prelabel_project(fake, predictor, predictor.settings, project, lambda **_: None)
        waits: list[float] = []
        state = run_prelabel_lane(fake, predictor, project, sleep=waits.append)
    status = state.status(project, "prelabel")
    assert status["state"] == "failed" and status["attempts"] == 3
    assert "3 of 3 posts got no pre-label" in status["reason"]
    assert waits == [5.0, 10.0]
    assert fake.predictions_of(project) == []
    predictor.labeler.close()


def test_a_refusing_label_studio_leaves_the_answers_paid_for_in_the_cache(tmp_path, llm, fake):
    project = fake.add_project(LABEL_CONFIG)
    for i in range(3):
        fake.add_task(project, f"post {i}")
    predictor = make_predictor(tmp_path, llm)
    original = fake.projects.import_predictions

    def refuse(**kwargs):
        from label_studio_sdk.core.api_error import ApiError

        raise ApiError(status_code=503, body={"detail": "maintenance"})

    fake.projects.import_predictions = refuse
    waits: list[float] = []

    def heal(seconds: float) -> None:  # Label Studio is back after the first back-off
        waits.append(seconds)
        fake.projects.import_predictions = original

    state = run_prelabel_lane(fake, predictor, project, sleep=heal)
    status = state.status(project, "prelabel")
    assert status["state"] == "finished" and status["done"] == 3, status
    assert waits == [5.0] and llm.requests == 3  # the retry asked the LLM nothing
    predictor.labeler.close()


CONTENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from backend.config import load_settings
    from backend.domain.taxonomy import parse_taxonomy
    from backend.llm.labeler import from_settings
    settings = load_settings({"MODEL_DIR": sys.argv[1], "LLM_BASE_URL": sys.argv[2],
                              "LLM_MODEL": "hosted", "LLM_CONCURRENCY": "8",
                              "LLM_MAX_RETRIES": "0", "REDIS_URL": sys.argv[3]})
    labeler = from_settings(settings)
    if sys.argv[4]:
        labeler.cache.answers = sys.argv[4] + ":answers"
        labeler.cache.claims = sys.argv[4] + ":claim:"
        labeler.cache.counters = sys.argv[4] + ":usage"
    taxonomy = parse_taxonomy(Path(sys.argv[5]).read_text())
    texts = [f"shared post {i}" for i in range(24)]
    opinions = labeler.label_many(taxonomy, texts)
    print(len(opinions), sum(o.error == "pending" for o in opinions))
""")


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_processes_asking_for_the_same_posts_pay_once(tmp_path, store, request):
    """Three processes (workers, replicas: they share only the cache) label the same 24
    posts at once against a slow endpoint: 24 calls, not 72."""
    redis_url, prefix = "", ""
    if store == "redis":
        _, prefix = request.getfixturevalue("redis_prefix")
        redis_url = REDIS_URL
    with MisbehavingLLM("slow", delay=0.3) as slow:
        contenders = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CONTENDER,
                    str(tmp_path / "models"),
                    slow.url,
                    redis_url,
                    prefix,
                    str(ROOT / "label_config.xml"),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [c.communicate(timeout=120)[0].strip() for c in contenders]
    assert [c.returncode for c in contenders] == [0, 0, 0]
    assert slow.requests == 24
    assert outputs == ["24 0"] * 3  # every post answered in each process


def test_the_stream_numbers_answers_across_chunks_and_takes_the_next_chunk_early(tmp_path, llm):
    """Pages of tasks go to the LLM as one stream: the next page is taken while the
    current one's last posts are still asked, so the endpoint never drains between
    pages; a text repeated within a page is asked once."""
    predictor = make_predictor(tmp_path, llm, LLM_CONCURRENCY="2")
    pages = [[f"page {p} post {i}" for i in range(10)] for p in range(3)]
    pages[1][9] = pages[1][8]  # asked once, answered for both
    yielded: list[int] = []
    taken_at: list[int] = []  # answers yielded when each page was taken

    def chunks():
        for page in pages:
            taken_at.append(len(yielded))
            yield page

    for indexes, opinion in predictor.labeler.label_stream(TAXONOMY, chunks()):
        assert opinion.label == "personal_experience"
        yielded.extend(indexes)

    assert sorted(yielded) == list(range(30))
    assert llm.requests == 29
    # Page 2 and 3 were taken while fewer than all earlier posts were answered.
    assert taken_at[1] < 10 and taken_at[2] < 20, taken_at


def test_a_text_on_two_pages_is_asked_once_and_answered_for_both(tmp_path):
    """Two tasks on different pages with the same text: the second finds the first's
    request still under way and shares it; both get the answer."""
    with MisbehavingLLM("scripted", answer=scripted, latency=0.3) as slow:
        predictor = make_predictor(tmp_path, slow, LLM_CONCURRENCY="2")
        pages = [["the same post", "post a"], ["the same post", "post b"]]
        answered = {
            index: opinion.label
            for indexes, opinion in predictor.labeler.label_stream(TAXONOMY, iter(pages))
            for index in indexes
        }
        assert answered == dict.fromkeys(range(4), "personal_experience")
        assert slow.requests == 3
