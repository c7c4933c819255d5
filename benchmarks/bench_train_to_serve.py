"""Benchmark the time from "Start Training" (`ml.train`) to the new version serving, on a
real Label Studio and the backend under gunicorn: a first run on N training annotations,
then a second once `--more` annotations were added. The jobs run as `make up` runs them (a
runner process started by the click), or with `--distributed` on a `takemeter worker`
already running, as a team's deployment runs them.

The project holds BBC News posts (5 topics, a label config of its own: the backend needs
no change for it), imported bare and pre-labeled by the LLM, then annotated through the
SDK as annotators would (so, as in real use, the LLM's answers for the judge posts are in
the cache when the run asks for them). For each run the clock starts at `ml.train` and
reads when the run begins its work (its status's `started`), when `/versions` first lists
the run's head (committed, judged and, if so judged, promoted before the fine-tune starts),
when the serving version changes, when the run
finishes (after the fine-tune, from TRAIN_FINETUNE_FROM annotations on) and when Label
Studio's project model_version is the version then serving. Each candidate's own times
(the head's embedding, how many posts it embedded, its fit and its whole build; the
fine-tune's training) come from its version's metrics: the pre-labeling job embedded every
post, so neither run's head should embed any.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from takemeter import stack
from takemeter.offline_data import bbc_label_config, bbc_posts
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def empty_redis(url: str | None) -> Iterator[None]:
    """The distributed mode's Redis database: refused unless empty, emptied after the run
    (nothing to do without one)."""
    if url is None:
        yield
        return
    import redis

    database = redis.Redis.from_url(url)
    if database.dbsize():
        raise SystemExit(f"{url} is not an empty database")
    try:
        yield
    finally:
        database.flushdb()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--annotations",
        type=int,
        default=200,
        help="training annotations (held-out tasks come on top)",
    )
    parser.add_argument(
        "--base-model",
        default=os.environ.get("BASE_MODEL") or None,
        help="default: the offline MiniLM-L6",
    )
    parser.add_argument("--more", type=int, default=20, help="labels added before the second run")
    parser.add_argument(
        "--distributed",
        metavar="REDIS_URL",
        help="run the jobs on a warm `takemeter worker` through this Redis (an empty "
        "database, emptied again at the end) instead of a runner process a click starts",
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "train_to_serve.json"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    holdout = 20
    # Enough tasks for `annotations` training labels, then `more`, beside the held-out ones.
    n_tasks = math.ceil((args.annotations + args.more) / (1 - holdout / 100) * 1.05)
    extra_tasks = math.ceil(args.more / (1 - holdout / 100))
    texts, topics = bbc_posts(n_tasks, seed=7)
    taxonomy = parse_taxonomy(bbc_label_config())
    login = stack.LabelStudioLogin(
        url=f"http://127.0.0.1:{stack.free_port()}",
        email="bench@example.com",
        password="bench-password-1",
        token="bench-token-12345",
    )
    # The backend's settings beyond its URLs and folders, recorded with the result.
    tuned = {
        "BASE_MODEL": args.base_model or str(minilm_path()),
        "TRAIN_EPOCHS": str(args.epochs),
        "TRAIN_MAX_LENGTH": "128",  # default 256
        "TRAIN_AFTER_ANNOTATIONS": "100000",  # no automatic run: only the clicks
        "HOLDOUT_PERCENT": str(holdout),
    }
    if args.distributed:
        tuned.update(REDIS_URL=args.distributed, BROKER_URL=args.distributed)
    with empty_redis(args.distributed), stack.running() as processes:
        started = time.monotonic()
        processes.append(
            stack.start_label_studio(
                data_dir=work / "ls",
                port=int(login.url.rsplit(":", 1)[1]),
                login=login,
                log_path=work / "ls.log",
            )
        )
        ls_first_start = time.monotonic() - started
        llm_port = stack.free_port()
        processes.append(stack.start_local_llm(port=llm_port, log_path=work / "llm.log"))
        port = stack.free_port()
        backend_url = f"http://127.0.0.1:{port}"
        env = {
            "MODEL_DIR": str(work / "model"),
            "LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
            "LABEL_STUDIO_URL": login.url,
            "LABEL_STUDIO_API_KEY": login.token,
            **tuned,
        }
        processes.append(stack.start_backend(env=env, port=port, log_path=work / "backend.log"))
        if args.distributed:
            processes.append(stack.start_worker(env=env, log_path=work / "worker.log"))

        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=login.url, api_key=login.token, timeout=300)
        project = client.projects.create(title="bench", label_config=bbc_label_config()).id
        client.projects.import_tasks(id=project, request=[{"data": {"text": t}} for t in texts])
        ml_id = ls_client.connect_backend(client, project, url=backend_url, title="takemeter")
        print(f"pre-labeling {n_tasks} posts with the LLM (not timed)...", flush=True)

        def jobs() -> dict:
            return requests.get(f"{backend_url}/jobs?project={project}", timeout=30).json()

        # Connecting starts the pre-labeling job; "Retrieve Predictions" asks again.
        deadline = time.monotonic() + 1800
        while len(ls_client.prediction_versions(client, project)) < n_tasks:
            if time.monotonic() > deadline:
                print("the pre-labeling job did not finish in 30 minutes", file=sys.stderr)
                return 1
            ls_client.retrieve_predictions(client, project)
            time.sleep(5)
        # The job embeds each batch after pushing it: the last one's embeddings come last.
        while jobs()["prelabel"].get("state") == "running":
            time.sleep(1)
        by_text = dict(zip(texts, topics, strict=True))
        tasks = ls_client.all_tasks(client, project)

        def annotate(chosen: list[dict]) -> None:
            print(f"annotating {len(chosen)} posts through the SDK (not timed)...", flush=True)
            for task in chosen:
                client.annotations.create(
                    id=task["id"], result=taxonomy.result(by_text[task["data"]["text"]])
                )

        def versions() -> dict:
            return requests.get(
                f"{backend_url}/versions", json={"project": project}, timeout=30
            ).json()

        def timed_run() -> dict | None:
            """Click "Start Training", and read the clock as the run goes."""
            before = versions()
            known = set(before["versions"])
            clock, clicked = time.monotonic(), time.time()
            client.ml.train(id=ml_id)
            head_at = serving_at = None
            status: dict = {}
            while time.monotonic() - clock < 900:
                listed = versions()
                if head_at is None and set(listed["versions"]) - known:
                    head_at = time.monotonic() - clock
                if serving_at is None and listed["serving"] != before["serving"]:
                    serving_at = time.monotonic() - clock
                status = requests.get(
                    f"{backend_url}/training?project={project}", timeout=30
                ).json()
                if status.get("state") in ("finished", "failed", "skipped"):
                    break
                time.sleep(0.25)
            finished = time.monotonic() - clock
            if status.get("state") != "finished":
                print(f"training did not finish: {status}", file=sys.stderr)
                return None
            listed = versions()
            while client.projects.get(id=project).model_version != listed["serving"]:
                time.sleep(0.25)
            in_label_studio = time.monotonic() - clock
            made = [d for d in listed["details"] if d["version"] not in known]
            return {
                "training_annotations": made[0]["data"]["n_examples"],
                # When the run began its work (its status's `started`, same host's clock):
                # what a runner process's start costs, or a worker's pick-up.
                "seconds_to_run_start": round(status["started"] - clicked, 1),
                "seconds_to_head_version": round(head_at or finished, 1),
                "seconds_to_new_serving": None if serving_at is None else round(serving_at, 1),
                "seconds_to_run_finished": round(finished, 1),
                "seconds_to_label_studio_model_version": round(in_label_studio, 1),
                "serving_at_the_end": listed["serving"],
                "candidates": [
                    {
                        "version": d["version"],
                        "kind": d["kind"],
                        "promoted": d.get("promoted"),
                        "fit_seconds": d["metrics"].get("train_seconds"),
                        "embed_seconds": d["metrics"].get("embed_seconds"),
                        "embedded_now": d["metrics"].get("embedded_now"),
                        "head_seconds": d["metrics"].get("total_seconds"),
                        "steps": d["metrics"].get("steps_run"),
                        "validation": d["validation"],
                    }
                    for d in made
                ],
            }

        # The first run learns from every label at once; the second from `--more` labels
        # on top, as when annotators go on labeling.
        annotate(tasks[: len(tasks) - extra_tasks])
        first = timed_run()
        annotate(tasks[len(tasks) - extra_tasks :])
        second = timed_run() if first else None
        if first is None or second is None:
            return 1
        figures = {
            "base_model": versions()["details"][0]["base_model"],
            "runs": [first, second],
            "backend_settings": tuned,
            "label_studio_first_start_seconds": round(ls_first_start, 1),
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            write_result(args.json, figures)
        return 0


if __name__ == "__main__":
    sys.exit(main())
