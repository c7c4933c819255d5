"""The command-line scripts end to end, run as a user runs them (subprocesses), against a
real Label Studio, the backend under gunicorn (basic auth on), the local LLM and the
tiny DistilBERT: set up a project twice, annotate (two annotators on some held-out
posts), train through the backend, export, evaluate live and from the export, draw a
learning curve, and fail with one clear line where a setting is wrong."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from backend.domain import queue
from backend.domain.dataset import is_held_out, latest_annotation
from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from tests.conftest import takemeter

pytestmark = pytest.mark.e2e

AUTH = ("scripts", "scripts-secret")
LLM_MODEL = "smollm2-135m-instruct"
HOLDOUT = 25  # with 40 posts, enough held-out tasks for every case below
TITLE = "scripts"
# The export's columns as a user's spreadsheet sees them: the CSV header, in order.
EXPORT_HEADER = (
    "task_id,ref_id,split,text,annotation_id,label,status,annotator,annotator_id,created_at,"
    "updated_at,lead_time,is_latest,prelabel_label,prelabel_score,prelabel_model_version,"
    "prelabel_source"
)


COMMANDS = {
    "setup_project": "setup",
    "export": "export",
    "evaluate": "evaluate",
    "learning_curve": "learning-curve",
}


def run(script: str, *args: str, env: dict, expect: int | None = 0) -> subprocess.CompletedProcess:
    """`takemeter <command>` for the script's name."""
    return takemeter(COMMANDS[script], *args, env=env, expect=expect)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def llm_cache(tmp_path_factory) -> Path:
    """An LLM answer cache of this module's own: the answers put in it below are made up
    and must not reach other tests."""
    return tmp_path_factory.mktemp("scripts-llm-cache") / "answers.sqlite"


@pytest.fixture(scope="module")
def script_backend(start_backend, label_studio, llm_cache):
    """A backend of its own that trains only when asked, with basic auth."""
    return start_backend(
        auth=AUTH,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_AFTER_ANNOTATIONS="100000",
        LLM_CACHE=str(llm_cache),
    )


@pytest.fixture(scope="module")
def env(label_studio, script_backend, llm_url, tiny_model, llm_cache) -> dict:
    return {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "LLM_CACHE": str(llm_cache),
        "MODEL_DIR": str(script_backend.model_dir),
        "LLM_BASE_URL": llm_url,
        "LLM_MODEL": LLM_MODEL,
        "LLM_TIMEOUT": "60",
        "LLM_MAX_RETRIES": "0",
        "BASE_MODEL": str(tiny_model),
        "BASIC_AUTH_USER": AUTH[0],
        "BASIC_AUTH_PASS": AUTH[1],
        "HOLDOUT_PERCENT": str(HOLDOUT),
        "TRAIN_EPOCHS": "2",
        "TRAIN_MIN_STEPS": "10",
        "TRAIN_BATCH_SIZE": "8",
        "TRAIN_MAX_LENGTH": "128",
        "TRAIN_LEARNING_RATE": "1e-3",
    }


@pytest.fixture(scope="module")
def sample(posts) -> list[dict]:
    return [p for p in posts if len(p["text"]) < 300][:40]


@pytest.fixture(scope="module")
def setup_runs(env, script_backend, sample, tmp_path_factory) -> tuple[dict, dict]:
    """setup_project.py twice on the same JSONL file (with a header line)."""
    path = tmp_path_factory.mktemp("posts") / "posts.jsonl"
    lines = [json.dumps({"_comment": "header line, no text"})]
    lines += [json.dumps({"id": p["id"], "text": p["text"], "label": p["label"]}) for p in sample]
    path.write_text("\n".join(lines) + "\n")
    args = ["--posts", str(path), "--title", TITLE, "--backend-url", script_backend.url, "--json"]
    first = json.loads(run("setup_project", *args, env=env).stdout)
    second = json.loads(run("setup_project", *args, env=env).stdout)
    return first, second


def test_setup_project_twice_is_idempotent(ls, setup_runs, sample, script_backend):
    first, second = setup_runs
    project = first["project"]
    assert second["project"] == project
    assert first["imported"] == len(sample) and second["imported"] == 0
    assert first["tasks"] == second["tasks"] == len(sample)
    assert second["split_updated"] == 0
    assert second["backend_connection"] == first["backend_connection"]
    assert second["review_tab"] == first["review_tab"]

    tasks = ls_client.all_tasks(ls, project)
    assert len(tasks) == len(sample)
    assert sorted(t["data"]["ref_id"] for t in tasks) == sorted(p["id"] for p in sample)
    # The gold labels are not imported as annotations, nor shown as task data.
    assert not any(t["annotations"] for t in tasks)
    assert not any("label" in t["data"] for t in tasks)
    # data.split follows the trainer's rule (the task-id hash, as no split was given).
    for task in tasks:
        by_rule = is_held_out({"id": task["id"], "data": {}}, percent=HOLDOUT)
        assert task["data"]["split"] == ("test" if by_rule else "train")
    assert first["held_out"] == sum(t["data"]["split"] == "test" for t in tasks)

    tabs = [
        v for v in ls.views.list(project=project) if (v.data or {}).get("title") == queue.REVIEW_TAB
    ]
    assert [v.id for v in tabs] == [first["review_tab"]]
    assert [m.id for m in ls.ml.list(project=project)] == [first["backend_connection"]]
    hooks = [h for h in ls.webhooks.list(project=project) if h.url.startswith(script_backend.url)]
    assert len(hooks) == 1 and (hooks[0].headers or {}).get("Authorization")
    instructions = ls.projects.get(id=project).expert_instruction
    assert "seeking_support" in instructions and "Rule 1" in instructions


def test_setup_project_imports_csv_with_gold_annotations(ls, env, sample, tmp_path):
    path = tmp_path / "posts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(
            {"id": p["id"], "text": p["text"], "label": p["label"]} for p in sample[:4]
        )
        writer.writerow({"id": "bad", "text": "Label outside the config.", "label": "spam"})
    summary = json.loads(
        run(
            "setup_project",
            "--posts",
            str(path),
            "--title",
            "scripts-csv",
            "--no-backend",
            "--import-labels-as-annotations",
            "--json",
            env=env,
        ).stdout
    )
    assert summary["imported"] == 5 and summary["gold_annotations"] == 4
    assert summary["gold_labels_unusable"] == 1 and summary["backend_connection"] is None
    taxonomy = parse_taxonomy(ls.projects.get(id=summary["project"]).label_config)
    gold = {p["id"]: p["label"] for p in sample[:4]}
    for task in ls_client.all_tasks(ls, summary["project"]):
        labels = [taxonomy.label_of(a["result"]) for a in task["annotations"]]
        assert labels == ([gold[task["data"]["ref_id"]]] if task["data"]["ref_id"] in gold else [])


@pytest.fixture(scope="module")
def trained(ls, setup_runs, sample, script_backend, label_config, llm_cache) -> dict:
    """Annotations through the SDK, then one training run through the backend.

    Training tasks: the gold label. Held-out tasks, by id: the first stays unlabeled, the
    second is only skipped, the rest get the gold label; the next two get a second
    annotation by another annotator (the second one disagreeing with the first)."""
    project = setup_runs[0]["project"]
    taxonomy = parse_taxonomy(label_config)
    gold = {p["id"]: p["label"] for p in sample}
    tasks = ls_client.all_tasks(ls, project)
    held = sorted((t for t in tasks if t["data"]["split"] == "test"), key=lambda t: t["id"])
    assert len(held) >= 4, f"only {len(held)} held-out tasks"

    # A pre-label in the version the backend serves, made the project's model_version
    # (Label Studio accepts a version only once predictions carry it): Label Studio then
    # records it with the annotation as the prediction the annotator saw.
    version = script_backend.post(
        "/setup", json={"project": f"{project}.0", "schema": label_config}
    ).json()["model_version"]
    prelabeled = next(t for t in tasks if t["data"]["split"] == "train")
    ls_client.import_predictions(
        ls,
        project,
        [
            {
                "task": prelabeled["id"],
                "result": taxonomy.result(taxonomy.names[0]),
                "score": 0.42,
                "model_version": version,
            }
        ],
    )
    ls.projects.update(id=project, model_version=version)

    for task in tasks:
        if task["id"] == held[0]["id"]:
            continue
        if task["id"] == held[1]["id"]:
            ls.annotations.create(id=task["id"], result=[], was_cancelled=True)
            continue
        ls.annotations.create(id=task["id"], result=taxonomy.result(gold[task["data"]["ref_id"]]))
    second = ls.users.create(
        username="second-annotator",
        email="scripts-second@example.com",
        password="second-password-1",
    )
    for task, agree in ((held[2], True), (held[3], False)):
        label = gold[task["data"]["ref_id"]]
        if not agree:
            label = next(name for name in taxonomy.names if name != label)
        annotation = ls.annotations.create(
            id=task["id"], result=taxonomy.result(label), completed_by=second.id
        )
        assert annotation.completed_by == second.id  # Label Studio keeps the annotator

    since = time.time()
    response = script_backend.post(
        "/webhook", json={"action": "START_TRAINING", "project": {"id": project}}
    )
    assert response.status_code == 201, response.text
    status = script_backend.wait_training(project, since=since)
    assert status["state"] == "finished", status

    tasks = ls_client.all_tasks(ls, project)
    expected = {}
    for task in tasks:
        latest = latest_annotation(task)
        if task["data"]["split"] == "test" and latest is not None:
            expected[task["id"]] = taxonomy.label_of(latest["result"])
    return {
        "project": project,
        "version": status["version"],
        "tasks": tasks,
        "expected_held_out": expected,
        "prelabeled": prelabeled["id"],
        "prelabel": taxonomy.names[0],
        "model_version": version,
        "second": (second.id, "scripts-second@example.com"),
        "disagreed": held[3]["id"],
    }


@pytest.fixture(scope="module")
def exported(env, trained, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    paths = {}
    for form in ("jsonl", "csv", "json"):
        paths[form] = folder / f"annotations.{form}"
        run(
            "export",
            "--project",
            str(trained["project"]),
            "--format",
            form,
            "--out",
            str(paths[form]),
            env=env,
        )
    return paths


def test_export_formats(env, trained, exported, tmp_path):
    tasks = trained["tasks"]
    annotated = [t for t in tasks if t["annotations"]]
    rows = [json.loads(line) for line in exported["jsonl"].read_text().splitlines()]
    assert len(rows) == len(annotated)
    assert all(",".join(row) == EXPORT_HEADER for row in rows)
    by_task = {row["task_id"]: row for row in rows}
    for task in annotated:
        row = by_task[task["id"]]
        assert row["split"] == task["data"]["split"] and row["text"] == task["data"]["text"]
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["label"] is None
    # The latest annotation wins; its annotator is named by e-mail.
    disagreed = by_task[trained["disagreed"]]
    assert disagreed["annotator"] == trained["second"][1]
    assert disagreed["label"] == trained["expected_held_out"][trained["disagreed"]]
    shown = by_task[trained["prelabeled"]]
    assert (shown["prelabel_label"], shown["prelabel_score"]) == (trained["prelabel"], 0.42)
    assert shown["prelabel_model_version"] == trained["model_version"]
    assert shown["prelabel_source"] == "annotation"

    with exported["csv"].open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert ",".join(reader.fieldnames or []) == EXPORT_HEADER
        csv_rows = list(reader)
    assert [(int(r["task_id"]), r["label"]) for r in csv_rows] == [
        (r["task_id"], r["label"] or "") for r in rows
    ]

    as_json = json.loads(exported["json"].read_text())
    assert sorted(t["id"] for t in as_json) == sorted(t["id"] for t in annotated)
    assert sum(len(t["annotations"]) for t in as_json) == sum(
        len(t["annotations"]) for t in annotated
    )

    every = tmp_path / "every.jsonl"
    summary = json.loads(
        run(
            "export",
            "--project",
            str(trained["project"]),
            "--all-annotations",
            "--out",
            str(every),
            "--json",
            env=env,
        ).stdout
    )
    every_rows = [json.loads(line) for line in every.read_text().splitlines()]
    assert summary["rows"] == len(every_rows) == summary["annotations"] == len(rows) + 2
    assert sum(r["is_latest"] for r in every_rows) == len(rows) - 1  # skipped: no latest


def test_evaluate_live_and_from_the_export(env, trained, exported, tmp_path):
    expected = trained["expected_held_out"]
    live = tmp_path / "live"
    done = run("evaluate", "--project", str(trained["project"]), "--out", str(live), env=env)
    assert "accuracy" in done.stdout and "fine-tuned" in done.stdout
    report = json.loads((live / "report.json").read_text())
    assert set(report["systems"]) == {"fine-tuned", "zero-shot"}
    assert report["n"] == len(expected)
    assert report["meta"]["model_version"] == trained["version"]
    assert {i["task_id"]: i["human"] for i in report["items"]} == expected
    assert report["n_annotator_pairs"] == 2
    assert (live / "report.md").is_file()
    assert sorted(p.name for p in live.glob("*.png")) == [
        "confusion_fine-tuned.png",
        "confusion_zero-shot.png",
        "reliability.png",
    ]
    calibration = report["calibration"]
    assert calibration["n"] >= 1 and set(calibration["scores"]) >= {"prior"}
    assert all({"brier", "ece", "reliability"} <= set(s) for s in calibration["scores"].values())
    assert "Score calibration:" in done.stdout and "Brier" in done.stdout

    from_file = tmp_path / "from-file"
    run("evaluate", "--from-file", str(exported["json"]), "--out", str(from_file), env=env)
    again = json.loads((from_file / "report.json").read_text())
    assert again["n"] == report["n"]
    # The same human labels and model answers (the LLM's may differ where it failed).
    assert [(i["task_id"], i["human"], i["fine-tuned"]) for i in again["items"]] == [
        (i["task_id"], i["human"], i["fine-tuned"]) for i in report["items"]
    ]
    assert again["n_annotator_pairs"] == 2


def test_evaluate_fails_clearly_without_held_out_set_or_model(env, exported, tmp_path):
    tasks = json.loads(exported["json"].read_text())
    training_only = tmp_path / "training-only.json"
    training_only.write_text(json.dumps([t for t in tasks if t["data"]["split"] == "train"]))
    done = run(
        "evaluate",
        "--from-file",
        str(training_only),
        "--out",
        str(tmp_path / "x"),
        env=env,
        expect=None,
    )
    assert "held-out set is empty" in one_line_error(done)
    no_models = {**env, "MODEL_DIR": str(tmp_path / "no-models")}
    done = run(
        "evaluate",
        "--from-file",
        str(exported["json"]),
        "--require-model",
        "--out",
        str(tmp_path / "y"),
        env=no_models,
        expect=None,
    )
    assert "no model version" in one_line_error(done)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # Without --require-model: the LLM alone, with a note.
    done = run(
        "evaluate",
        "--from-file",
        str(exported["json"]),
        "--out",
        str(tmp_path / "z"),
        env=no_models,
    )
    assert "evaluating the zero-shot LLM alone" in done.stdout
    assert list(json.loads((tmp_path / "z" / "report.json").read_text())["systems"]) == [
        "zero-shot"
    ]


def test_learning_curve(env, trained, tmp_path):
    done = run(
        "learning_curve",
        "--project",
        str(trained["project"]),
        "--shares",
        "0.5,1.0",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        env=env,
    )
    assert "100%" in done.stdout
    curve = json.loads((tmp_path / "learning_curve.json").read_text())
    assert [p["share"] for p in curve["points"]] == [0.5, 1.0]
    assert curve["points"][0]["n_train"] < curve["points"][1]["n_train"]
    assert curve["n_test"] == len(trained["expected_held_out"])
    assert all(0 <= p["accuracy"] <= 1 for p in curve["points"])
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_wrong_settings_fail_with_one_line(env, trained, tmp_path):
    from takemeter.stack import free_port

    out = str(tmp_path / "out.jsonl")
    project = str(trained["project"])
    wrong_url = {**env, "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}"}
    done = run("export", "--project", project, "--out", out, env=wrong_url, expect=None)
    assert "LABEL_STUDIO_URL" in one_line_error(done)
    bad_token = {**env, "LABEL_STUDIO_API_KEY": "not-the-token"}
    done = run("evaluate", "--project", project, env=bad_token, expect=None)
    assert "LABEL_STUDIO_API_KEY" in one_line_error(done)
    done = run("learning_curve", "--project", "999999", env=env, expect=None)
    assert "project 999999" in one_line_error(done)
    done = run("setup_project", env={**env, "HOLDOUT_PERCENT": "many"}, expect=None)
    assert "HOLDOUT_PERCENT" in one_line_error(done)
    assert not Path(out).exists()
