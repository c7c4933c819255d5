"""Benchmark the time from "Start Training" (`ml.train`) to the new version serving, for a
project with N training annotations, on a real Label Studio and the backend under gunicorn.

The project holds BBC News posts (5 topics, a label config of its own: the backend needs
no change for it), imported bare and pre-labeled by the LLM, then annotated through the
SDK as annotators would (so, as in real use, the LLM's answers for the judge posts are
in the cache when the run asks for them). The clock starts at `ml.train`; it reads (a)
when `/versions` first reports a new serving version (the run's head, promoted before the fine-tune
starts), (b) when the run finishes (after the fine-tune, from TRAIN_FINETUNE_FROM
annotations on), and (c) when Label Studio's project model_version is the version then
serving. Each candidate's own fit time (the head's embedding and fit, the fine-tune's
training) comes from its version's metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from takemeter import stack
from takemeter.offline_data import bbc_label_config, bbc_posts
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parent.parent


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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    holdout = 20
    n_tasks = math.ceil(args.annotations / (1 - holdout / 100) * 1.05)
    texts, topics = bbc_posts(n_tasks, seed=7)
    taxonomy = parse_taxonomy(bbc_label_config())
    login = stack.LabelStudioLogin(
        url=f"http://127.0.0.1:{stack.free_port()}",
        email="bench@example.com",
        password="bench-password-1",
        token="bench-token-12345",
    )
    with stack.running() as processes:
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
        processes.append(
            stack.start_backend(
                env={
                    "MODEL_DIR": str(work / "model"),
                    "LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
                    "LABEL_STUDIO_URL": login.url,
                    "LABEL_STUDIO_API_KEY": login.token,
                    "BASE_MODEL": args.base_model or str(minilm_path()),
                    "TRAIN_EPOCHS": str(args.epochs),
                    "TRAIN_MAX_LENGTH": "128",
                    "TRAIN_AFTER_ANNOTATIONS": "100000",
                    "HOLDOUT_PERCENT": str(holdout),
                },
                port=port,
                log_path=work / "backend.log",
            )
        )

        from label_studio_sdk import LabelStudio

        client = LabelStudio(base_url=login.url, api_key=login.token, timeout=300)
        project = client.projects.create(title="bench", label_config=bbc_label_config()).id
        client.projects.import_tasks(id=project, request=[{"data": {"text": t}} for t in texts])
        ml_id = ls_client.connect_backend(client, project, url=backend_url, title="takemeter")
        print(f"pre-labeling {n_tasks} posts with the LLM (not timed)...", flush=True)
        # Connecting starts the pre-labeling job; "Retrieve Predictions" asks again.
        deadline = time.monotonic() + 1800
        while len(ls_client.prediction_versions(client, project)) < n_tasks:
            if time.monotonic() > deadline:
                print("the pre-labeling job did not finish in 30 minutes", file=sys.stderr)
                return 1
            ls_client.retrieve_predictions(client, project)
            time.sleep(5)
        print(f"annotating {n_tasks} posts through the SDK (not timed)...", flush=True)
        by_text = dict(zip(texts, topics, strict=True))
        for task in ls_client.all_tasks(client, project):
            client.annotations.create(
                id=task["id"], result=taxonomy.result(by_text[task["data"]["text"]])
            )

        def versions() -> dict:
            return requests.get(
                f"{backend_url}/versions", json={"project": project}, timeout=30
            ).json()

        before = versions().get("serving")  # the LLM's name until a version serves
        clock = time.monotonic()
        client.ml.train(id=ml_id)
        first_serving = first_serving_at = None
        status: dict = {}
        while time.monotonic() - clock < 900:
            if first_serving is None and (serving := versions().get("serving")) != before:
                first_serving, first_serving_at = serving, time.monotonic() - clock
            status = requests.get(f"{backend_url}/training?project={project}", timeout=30).json()
            if status.get("state") in ("finished", "failed", "skipped"):
                break
            time.sleep(0.25)
        finished = time.monotonic() - clock
        if status.get("state") != "finished":
            print(f"training did not finish: {status}", file=sys.stderr)
            return 1
        listed = versions()
        while client.projects.get(id=project).model_version != listed["serving"]:
            time.sleep(0.25)
        in_label_studio = time.monotonic() - clock
        details = listed["details"]
        figures = {
            "training_annotations": details[0]["data"]["n_examples"],
            "base_model": details[0]["base_model"],
            "seconds_to_first_serving": round(first_serving_at or finished, 1),
            "first_serving": first_serving or listed["serving"],
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
                    "steps": d["metrics"].get("steps_run"),
                    "validation": d["validation"],
                }
                for d in details
            ],
            "label_studio_first_start_seconds": round(ls_first_start, 1),
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            write_result(args.json, figures)
        return 0


if __name__ == "__main__":
    sys.exit(main())
