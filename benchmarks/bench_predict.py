"""Benchmark a bulk "Retrieve Predictions" on 1,000 tasks as `make up` runs it: a real
Label Studio, the backend under gunicorn connected to it, the embedded LLM.

Connected to Label Studio the backend's /predict never waits on the LLM: it answers at
once with the pre-labels the answer cache holds and queues the background pre-labeling
job for the rest, which pushes them into Label Studio as they come. The script imports the
posts bare, connects the backend (which starts that job, as `make up` does), and times:
- cold: Label Studio's "Retrieve Predictions" action on every task right after
  connecting (Label Studio sends them in one /predict and saves what comes back), and
  how many tasks then hold a pre-label;
- the job: until every task holds a pre-label (posts a second, LLM calls per post);
- warm: the same action again, and one /predict of all tasks sent straight to the
  backend as Label Studio sends it (no LLM call; Label Studio's own saving excluded).
Output: a table and --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

from backend.labelstudio import client as ls_client
from takemeter import stack
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parent.parent


def demo_texts(n: int) -> list[str]:
    """n distinct posts: the demo posts, varied by a suffix once they run out."""
    rows = [json.loads(line) for line in (ROOT / "data" / "demo_posts.jsonl").open()]
    base = [r["text"] for r in rows if "text" in r]
    return [
        base[i % len(base)] + ("" if i < len(base) else f" (update {i // len(base)})")
        for i in range(n)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument(
        "--wait", type=float, default=3600, help="seconds to wait for the job to pre-label all"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "predict.json",
        help="write the figures here (default: %(default)s)",
    )
    args = parser.parse_args()

    from label_studio_sdk import LabelStudio

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    config = (ROOT / "label_config.xml").read_text()
    login = stack.LabelStudioLogin(
        url=f"http://127.0.0.1:{stack.free_port()}",
        email="bench@example.com",
        password="bench-password-1",
        token="bench-token-12345",
    )
    with stack.running() as processes:
        processes.append(
            stack.start_label_studio(
                data_dir=work / "ls",
                port=int(login.url.rsplit(":", 1)[1]),
                login=login,
                log_path=work / "ls.log",
            )
        )
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
                    # As `make up` runs it: the job embeds the posts with MiniLM-L6 too.
                    "BASE_MODEL": str(minilm_path()),
                },
                port=port,
                log_path=work / "backend.log",
            )
        )
        client = LabelStudio(base_url=login.url, api_key=login.token, timeout=600)
        project = client.projects.create(title="bench-predict", label_config=config).id
        client.projects.import_tasks(
            id=project, request=[{"data": {"text": t}} for t in demo_texts(args.tasks)]
        )

        def prelabeled() -> int:
            return len(ls_client.prediction_versions(client, project))

        def timed_retrieve() -> float:
            started = time.monotonic()
            ls_client.retrieve_predictions(client, project)
            return time.monotonic() - started

        connected_at = time.monotonic()
        ls_client.connect_backend(client, project, url=backend_url, title="takemeter")
        cold_seconds = timed_retrieve()
        cold_prelabeled = prelabeled()
        print(
            f"cold Retrieve Predictions: {cold_seconds:.1f} s, "
            f"{cold_prelabeled}/{args.tasks} tasks pre-labeled",
            flush=True,
        )
        while (done := prelabeled()) < args.tasks:
            if time.monotonic() - connected_at > args.wait:
                print(f"only {done} of {args.tasks} pre-labeled in {args.wait:.0f} s")
                return 1
            time.sleep(10)
        job_seconds = time.monotonic() - connected_at
        print(
            f"every task pre-labeled {job_seconds:.0f} s after connecting "
            f"({args.tasks / job_seconds:.2f} posts/s)",
            flush=True,
        )
        calls_before = requests.get(backend_url + "/metrics", timeout=30).json()["llm_calls"]
        warm_seconds = timed_retrieve()
        tasks = [{"id": t["id"], "data": t["data"]} for t in ls_client.all_tasks(client, project)]
        started = time.monotonic()
        response = requests.post(
            backend_url + "/predict",
            json={"tasks": tasks, "label_config": config, "project": f"{project}.0"},
            timeout=600,
        )
        response.raise_for_status()
        direct_seconds = time.monotonic() - started
        direct_prelabeled = sum(1 for r in response.json()["results"] if r)
        metrics = requests.get(backend_url + "/metrics", timeout=30).json()
        figures = {
            "mode": "make up: Label Studio, the backend connected to it, the embedded LLM",
            "tasks": args.tasks,
            "llm": metrics["llm_model"],
            "cold_retrieve_seconds": round(cold_seconds, 2),
            "cold_prelabeled": cold_prelabeled,
            "all_prelabeled_seconds": round(job_seconds, 1),
            "posts_per_second": round(args.tasks / job_seconds, 2),
            "warm_retrieve_seconds": round(warm_seconds, 2),
            "warm_direct_predict_seconds": round(direct_seconds, 2),
            "warm_direct_prelabeled": direct_prelabeled,
            "llm_calls_while_warm": metrics["llm_calls"] - calls_before,
            "metrics": metrics,
        }
        print(
            f"warm Retrieve Predictions: {warm_seconds:.2f} s; /predict of all {len(tasks)} "
            f"tasks straight to the backend: {direct_seconds:.2f} s, {direct_prelabeled} "
            f"pre-labels, {figures['llm_calls_while_warm']} LLM calls"
        )
        print(
            f"LLM calls {metrics['llm_calls']}, prompt tokens {metrics['prompt_tokens']}, "
            f"completion tokens {metrics['completion_tokens']}"
        )
        if args.json:
            write_result(args.json, figures)
        return 0


if __name__ == "__main__":
    sys.exit(main())
