"""Export a project's annotations as JSONL, CSV or Label Studio JSON.

One row per annotated task by default: its latest annotation that was not skipped (the
one the trainer and the evaluation use), or, for a task whose every annotation was
skipped, the latest skipped one, marked as such. --all-annotations gives one row per
annotation, skipped ones included and marked.

Row columns: task_id, ref_id, split (the held-out rule of backend.domain.dataset), text,
annotation_id, label, status (labeled / skipped / no_label), annotator (e-mail where
Label Studio tells it, else the user id), annotator_id, created_at, updated_at,
lead_time, is_latest, and the pre-label that was shown: prelabel_label, prelabel_score,
prelabel_model_version, prelabel_source ("annotation": the prediction Label Studio
recorded with the annotation; "task": the task's prediction of the project's
model_version, when Label Studio recorded none).

--format json writes Label Studio's own export format: every annotated task with all its
annotations (evaluate.py --from-file reads it, inter-annotator agreement included).
--from-file reads such a file instead of a live project.

Examples:
  takemeter export --project 3 --format csv --out out/annotations.csv
  takemeter export --from-file out/project-3.json --format jsonl --out out/a.jsonl
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from tqdm import tqdm

from backend.domain.dataset import annotation_order, is_held_out, latest_annotation
from backend.domain.taxonomy import Taxonomy
from takemeter import common

COLUMNS = [
    "task_id",
    "ref_id",
    "split",
    "text",
    "annotation_id",
    "label",
    "status",
    "annotator",
    "annotator_id",
    "created_at",
    "updated_at",
    "lead_time",
    "is_latest",
    "prelabel_label",
    "prelabel_score",
    "prelabel_model_version",
    "prelabel_source",
]


def chosen_annotations(task: dict, *, every: bool) -> list[dict]:
    """The annotations that get a row: all of them, or the one the trainer would use
    (falling back to the latest skipped one, so skipped tasks still show up)."""
    annotations = list(task.get("annotations") or [])
    if every or not annotations:
        return sorted(annotations, key=annotation_order)
    latest = latest_annotation(task)
    return [latest if latest is not None else max(annotations, key=annotation_order)]


def annotator_names(client: LabelStudio | None) -> dict[int, str]:
    """User id -> e-mail, from one users call; empty when the token may not list users."""
    if client is None:
        return {}
    try:
        return {
            user.id: user.email or user.username or str(user.id) for user in client.users.list()
        }
    except ApiError:
        return {}


def project_predictions(
    client: LabelStudio | None, project: int | None
) -> tuple[dict[int, dict], str | None]:
    """Each task's prediction of the project's model_version (what Label Studio shows)."""
    if client is None or project is None:
        return {}, None
    version = client.projects.get(id=project).model_version
    found: dict[int, dict] = {}
    for prediction in client.predictions.list(project=project):
        if version and prediction.model_version == version:
            found[prediction.task] = {
                "result": prediction.result,
                "score": prediction.score,
                "model_version": prediction.model_version,
            }
    return found, version


def shown_prediction(
    annotation: dict, task: dict, by_task: dict[int, dict], version: str | None
) -> tuple[dict | None, str]:
    """The prediction the annotator saw, and where that knowledge comes from."""
    recorded = annotation.get("prediction")
    if isinstance(recorded, dict) and recorded.get("result") is not None:
        return recorded, "annotation"
    if task.get("id") in by_task:
        return by_task[task["id"]], "task"
    # Exports made with full predictions carry them inline rather than as ids.
    for prediction in task.get("predictions") or []:
        if isinstance(prediction, dict) and (
            version is None or prediction.get("model_version") == version
        ):
            return prediction, "task"
    return None, ""


def rows_for(
    tasks: list[dict],
    taxonomy: Taxonomy,
    *,
    percent: int,
    every: bool,
    users: dict[int, str],
    by_task: dict[int, dict],
    version: str | None,
) -> list[dict]:
    rows = []
    for task in tqdm(tasks, desc="annotations", unit="task", file=sys.stderr):
        data = task.get("data") or {}
        latest = latest_annotation(task)
        split = "test" if is_held_out(task, percent=percent) else "train"
        for annotation in chosen_annotations(task, every=every):
            label = taxonomy.label_of(annotation.get("result") or [])
            cancelled = bool(annotation.get("was_cancelled"))
            user = annotation.get("completed_by")
            if isinstance(user, dict):  # some exports expand the user
                user_id, name = user.get("id"), user.get("email") or user.get("id")
            else:
                user_id, name = user, users.get(user, user) if isinstance(user, int) else user
            prediction, source = shown_prediction(annotation, task, by_task, version)
            rows.append(
                {
                    "task_id": task.get("id"),
                    "ref_id": data.get("ref_id"),
                    "split": split,
                    "text": data.get(taxonomy.text_field),
                    "annotation_id": annotation.get("id"),
                    "label": None if cancelled else label,
                    "status": "skipped" if cancelled else ("labeled" if label else "no_label"),
                    "annotator": name,
                    "annotator_id": user_id,
                    "created_at": annotation.get("created_at"),
                    "updated_at": annotation.get("updated_at"),
                    "lead_time": annotation.get("lead_time"),
                    "is_latest": latest is not None and annotation.get("id") == latest.get("id"),
                    "prelabel_label": taxonomy.label_of((prediction or {}).get("result") or []),
                    "prelabel_score": (prediction or {}).get("score"),
                    "prelabel_model_version": (prediction or {}).get("model_version"),
                    "prelabel_source": source,
                }
            )
    return rows


def write(path: Path, form: str, rows: list[dict], tasks: list[dict]) -> None:
    """Atomically: a reader never sees half an export."""
    with common.atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        if form == "json":
            json.dump(tasks, handle, ensure_ascii=False, indent=1)
        elif form == "csv":
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        else:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    common.add_source_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("jsonl", "csv", "json"),
        default="jsonl",
        help="output format (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="file to write")
    parser.add_argument(
        "--all-annotations",
        action="store_true",
        help="a row per annotation instead of the latest per task",
    )
    common.add_json_argument(parser)
    args = parser.parse_args(argv)

    settings = common.settings()
    source = common.load_source(args, settings)
    annotated = [t for t in source.tasks if t.get("annotations")]
    users = annotator_names(source.client)
    by_task, version = project_predictions(source.client, source.project)
    rows = rows_for(
        annotated,
        source.taxonomy,
        percent=settings.holdout_percent,
        every=args.all_annotations,
        users=users,
        by_task=by_task,
        version=version,
    )
    write(args.out, args.format, rows, annotated)

    summary = {
        "source": source.description,
        "project": source.project,
        "out": str(args.out),
        "format": args.format,
        "tasks": len(annotated),
        "rows": len(annotated) if args.format == "json" else len(rows),
        "annotations": sum(len(t["annotations"]) for t in annotated),
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "held_out_tasks": sum(is_held_out(t, percent=settings.holdout_percent) for t in annotated),
    }
    unit = "tasks" if args.format == "json" else "rows"
    lines = [
        f"wrote {summary['rows']} {unit} ({summary['tasks']} annotated tasks, "
        f"{summary['skipped']} skipped rows, {summary['held_out_tasks']} held-out "
        f"tasks) from {source.description} to {args.out}"
    ]
    common.emit(summary, lines, as_json=args.json)
    return 0


if __name__ == "__main__":
    common.run(main)
