"""Create or update a TakeMeter project in Label Studio and fill it with posts.

Steps, each safe to repeat (a second run changes nothing):
  1. the project with --title, from --config; the Choice hints (decision rules) also
     become the project's labeling instructions;
  2. posts from --posts (JSONL or CSV) imported once each, keyed by their id (data.ref_id);
     a gold "label" column is imported as an annotation only with
     --import-labels-as-annotations;
  3. data.split = "test" / "train" on every task, by the same held-out rule the trainer
     uses (backend.dataset.is_held_out), so the Data Manager can show and filter it;
  4. the review-queue tab, uncertainty sampling (so "Label All Tasks" serves the lowest
     prediction score first), and the backend connected (--backend-url; basic auth from
     BASIC_AUTH_USER/PASS), its webhooks given that auth;
  5. with --retrieve-predictions, pre-labels for every task.

Example:
  LABEL_STUDIO_URL=http://localhost:8080 LABEL_STUDIO_API_KEY=... \\
      takemeter setup --posts data/demo_posts.jsonl --json
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from tqdm import tqdm

from backend.domain.dataset import SPLIT_FIELD, is_held_out
from backend.domain.taxonomy import Taxonomy
from backend.labelstudio import client as ls_client
from takemeter import common

KEY_FIELD = "ref_id"
LABEL_COLUMN = "label"
UPDATE_CONCURRENCY = 4


def instructions_html(taxonomy: Taxonomy) -> str:
    """The labeling instructions: the config's header and each label's decision rule.
    Only text is escaped (not quotes): Label Studio stores the HTML through bleach, and
    the stored text must equal ours or every run would update the project again."""
    parts = []
    if taxonomy.instructions:
        parts.append(f"<p>{html.escape(taxonomy.instructions, quote=False)}</p>")
    items = "".join(
        f"<li><b>{html.escape(label.name, quote=False)}</b>"
        + (f": {html.escape(label.rule, quote=False)}" if label.rule else "")
        + "</li>"
        for label in taxonomy.labels
    )
    parts.append(f"<ol>{items}</ol>")
    return "".join(parts)


def read_posts(path: Path, text_field: str) -> list[dict]:
    """Rows with a non-empty text from a JSONL or CSV file (chosen by extension)."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise common.CliError(f"cannot read posts file {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        # newline="": posts often hold line breaks inside quoted fields.
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        if text_field not in (reader.fieldnames or []):
            raise common.CliError(
                f"{path} has no {text_field!r} column (columns: "
                f"{', '.join(reader.fieldnames or [])})"
            )
        rows = list(reader)
    else:
        rows = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise common.CliError(f"{path}:{number} is not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise common.CliError(f"{path}:{number} is not a JSON object")
            rows.append(row)
    # Header/comment lines carry no text: skip them rather than import empty tasks.
    posts = [r for r in rows if isinstance(r.get(text_field), str) and r[text_field].strip()]
    if not posts:
        raise common.CliError(f"{path} holds no posts with a {text_field!r} field")
    return posts


def ref_id(row: dict, text_field: str) -> str:
    """The row's id; without one, a hash of the text, so re-imports still match."""
    value = row.get("id")
    if value not in (None, ""):
        return str(value)
    return "sha1:" + hashlib.sha1(row[text_field].encode()).hexdigest()[:16]


def import_labels(
    client: LabelStudio,
    project: int,
    taxonomy: Taxonomy,
    new_tasks: list[dict],
    gold: dict[str, str],
) -> tuple[int, int]:
    """Annotations from the gold column for the tasks just imported; (made, unusable)."""
    made = unusable = 0
    for task in tqdm(
        new_tasks, desc="gold annotations", unit="task", file=sys.stderr, disable=not new_tasks
    ):
        label = gold.get(str(task["data"].get(KEY_FIELD)))
        if label is None:
            continue
        if label not in taxonomy.names:
            unusable += 1
            continue
        client.annotations.create(id=task["id"], project=project, result=taxonomy.result(label))
        made += 1
    return made, unusable


def mark_splits(client: LabelStudio, tasks: list[dict], percent: int) -> int:
    """Write data.split per the held-out rule where it is missing or different."""
    todo = []
    for task in tasks:
        split = "test" if is_held_out(task, percent=percent) else "train"
        if (task.get("data") or {}).get(SPLIT_FIELD) != split:
            # PATCH replaces data as a whole: send every field back with the split.
            todo.append((task, {**(task.get("data") or {}), SPLIT_FIELD: split}))

    def update(item: tuple[dict, dict]) -> None:
        task, data = item
        client.tasks.update(id=str(task["id"]), data=data)
        task["data"] = data

    # Label Studio has no bulk data update; a few requests in flight roughly halve the
    # time of one-by-one PATCHes without loading the server much.
    with ThreadPoolExecutor(max_workers=UPDATE_CONCURRENCY) as pool:
        for _ in tqdm(
            pool.map(update, todo),
            total=len(todo),
            desc="marking held-out split",
            unit="task",
            file=sys.stderr,
            disable=not todo,
        ):
            pass
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=common.DEFAULT_CONFIG,
        help="Label Studio label config (default: %(default)s)",
    )
    parser.add_argument(
        "--title",
        default="TakeMeter",
        help="project title (default: %(default)s); an existing project with this title is updated",
    )
    parser.add_argument(
        "--posts",
        type=Path,
        help="posts to import: .jsonl or .csv with a "
        "text column and an optional id and label column",
    )
    parser.add_argument(
        "--import-labels-as-annotations",
        action="store_true",
        help="import the posts' gold 'label' as annotations (off by default:"
        " gold labels are for checking annotators, not for training)",
    )
    parser.add_argument(
        "--backend-url",
        default="http://127.0.0.1:9090",
        help="the TakeMeter backend to connect (default: %(default)s)",
    )
    parser.add_argument("--no-backend", action="store_true", help="do not connect a backend")
    parser.add_argument(
        "--retrieve-predictions",
        action="store_true",
        help="ask the backend for pre-labels of every task",
    )
    common.add_json_argument(parser)
    args = parser.parse_args(argv)

    if args.retrieve_predictions and args.no_backend:
        raise common.CliError(
            "--retrieve-predictions needs a connected backend (drop --no-backend)"
        )
    settings = common.settings()
    label_config, taxonomy = common.read_taxonomy(args.config)
    # Read the posts before touching Label Studio: a bad file changes nothing.
    posts = read_posts(args.posts, taxonomy.text_field) if args.posts else []
    client = common.connect(settings)
    lines: list[str] = []

    project = ls_client.ensure_project(
        client,
        title=args.title,
        label_config=label_config,
        instructions=instructions_html(taxonomy),
    )
    lines.append(f"project {project.id} ({project.title}) at {settings.label_studio_url}")

    # One task per id: a post listed twice in the file is imported once.
    by_ref: dict[str, dict] = {}
    for row in posts:
        by_ref.setdefault(ref_id(row, taxonomy.text_field), row)
    rows = [
        {taxonomy.text_field: row[taxonomy.text_field], KEY_FIELD: ref}
        for ref, row in by_ref.items()
    ]
    new_ids = ls_client.import_posts(client, project.id, rows, key_field=KEY_FIELD)
    lines.append(f"imported {len(new_ids)} new posts ({len(rows) - len(new_ids)} already there)")

    tasks = ls_client.all_tasks(client, project.id)
    summary: dict = {
        "project": project.id,
        "title": project.title,
        "url": settings.label_studio_url,
        "imported": len(new_ids),
    }
    if args.import_labels_as_annotations:
        gold = {
            ref_id(row, taxonomy.text_field): str(row[LABEL_COLUMN])
            for row in posts
            if row.get(LABEL_COLUMN) not in (None, "")
        }
        fresh = set(new_ids)
        made, unusable = import_labels(
            client, project.id, taxonomy, [t for t in tasks if t["id"] in fresh], gold
        )
        summary.update(gold_annotations=made, gold_labels_unusable=unusable)
        lines.append(
            f"created {made} annotations from gold labels"
            + (f" ({unusable} labels not in the config, skipped)" if unusable else "")
        )

    changed = mark_splits(client, tasks, settings.holdout_percent)
    held_out = sum(is_held_out(t, percent=settings.holdout_percent) for t in tasks)
    summary.update(
        tasks=len(tasks),
        held_out=held_out,
        train=len(tasks) - held_out,
        holdout_percent=settings.holdout_percent,
        split_updated=changed,
    )
    lines.append(
        f"{len(tasks)} tasks: {held_out} held out (data.split=test), "
        f"{len(tasks) - held_out} for training; {changed} split marks written"
    )

    # The tab before the backend: on connecting, each backend worker also makes sure the
    # tab exists, and check-then-create calls racing each other would make several.
    summary["review_tab"] = ls_client.ensure_review_tab(client, project.id)
    lines.append(f"review-queue tab {summary['review_tab']}")
    # "Label All Tasks" follows the sampling, not the tab: lowest prediction score first.
    ls_client.ensure_sampling(client, project.id, project.sampling)
    summary["sampling"] = ls_client.UNCERTAINTY_SAMPLING
    lines.append(
        f"Label All Tasks: {ls_client.UNCERTAINTY_SAMPLING.lower()} (lowest prediction score first)"
    )
    connection = None
    if not args.no_backend:
        auth = settings.basic_auth
        try:
            connection = ls_client.connect_backend(
                client, project.id, url=args.backend_url, title="TakeMeter", auth=auth
            )
        except ApiError as exc:
            raise common.CliError(
                f"Label Studio could not connect the backend at "
                f"{args.backend_url} (is it running? check --backend-url and "
                f"BASIC_AUTH_USER/PASS): {ls_client.describe_error(exc)}"
            ) from None
        # Annotation webhooks do not carry the backend's basic auth by themselves.
        ls_client.ensure_webhook_auth(client, project.id, args.backend_url.rstrip("/"), auth)
        lines.append(f"backend {args.backend_url} connected (ML connection {connection})")
    summary["backend_connection"] = connection

    if args.retrieve_predictions:
        ls_client.retrieve_predictions(client, project.id)
        summary["predictions"] = sum(
            len(v) for v in ls_client.prediction_versions(client, project.id).values()
        )
        lines.append(f"{summary['predictions']} predictions in the project")

    common.emit(summary, lines, as_json=args.json)
    return 0


if __name__ == "__main__":
    common.run(main)
