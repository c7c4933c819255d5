"""Benchmark a bulk /predict: what Label Studio's "Retrieve Predictions" sends for 1,000
tasks, against the backend under gunicorn and a real LLM, cold and warm cache.

Cold: a fresh answer cache; the request answers by PREDICT_DEADLINE with the posts the LLM
finished, the rest finish in the background. The script then waits for the cache to hold
every post and sends the same request again (warm). Output: a table and --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

from takemeter import stack
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


def timed_predict(url: str, tasks: list[dict], config: str) -> tuple[float, int]:
    started = time.monotonic()
    response = requests.post(
        url + "/predict",
        json={"tasks": tasks, "label_config": config, "project": "1.0"},
        timeout=600,
    )
    response.raise_for_status()
    results = response.json()["results"]
    return time.monotonic() - started, sum(1 for r in results if r)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument(
        "--llm-base-url",
        help="an OpenAI-compatible endpoint (default: the embedded local llama.cpp server)",
    )
    parser.add_argument("--llm-model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--wait-warm",
        type=float,
        default=1800,
        help="seconds to wait for the background to answer every post",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "predict.json",
        help="write the figures here (default: %(default)s)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    config = (ROOT / "label_config.xml").read_text()
    tasks = [{"id": i + 1, "data": {"text": text}} for i, text in enumerate(demo_texts(args.tasks))]
    with stack.running() as processes:
        llm_url = args.llm_base_url
        if not llm_url:
            port = stack.free_port()
            processes.append(stack.start_local_llm(port=port, log_path=work / "llm.log"))
            llm_url = f"http://127.0.0.1:{port}/v1"
        port = stack.free_port()
        processes.append(
            stack.start_backend(
                env={
                    "MODEL_DIR": str(work / "model"),
                    "LLM_BASE_URL": llm_url,
                    "LLM_MODEL": args.llm_model,
                },
                port=port,
                log_path=work / "backend.log",
            )
        )
        url = f"http://127.0.0.1:{port}"

        cold_seconds, cold_labeled = timed_predict(url, tasks, config)
        print(f"cold: {cold_seconds:.1f} s, {cold_labeled}/{len(tasks)} pre-labeled", flush=True)
        started = time.monotonic()
        while time.monotonic() - started < args.wait_warm:
            cached = requests.get(url + "/metrics", timeout=30).json()["cached_answers"]
            if cached >= len(tasks):
                break
            time.sleep(5)
        fill_seconds = cold_seconds + time.monotonic() - started
        print(
            f"every post answered after {fill_seconds:.0f} s in all "
            f"({len(tasks) / fill_seconds:.2f} posts/s)",
            flush=True,
        )
        warm_seconds, warm_labeled = timed_predict(url, tasks, config)
        metrics = requests.get(url + "/metrics", timeout=30).json()
        figures = {
            "tasks": len(tasks),
            "llm": args.llm_model,
            "llm_base_url": llm_url,
            "cold_seconds": round(cold_seconds, 2),
            "cold_prelabeled": cold_labeled,
            "all_answered_seconds": round(fill_seconds, 1),
            "llm_posts_per_second": round(len(tasks) / fill_seconds, 2),
            "warm_seconds": round(warm_seconds, 2),
            "warm_prelabeled": warm_labeled,
            "warm_speedup": round(cold_seconds / warm_seconds, 1),
            "metrics": metrics,
        }
        print(
            f"warm: {warm_seconds:.2f} s, {warm_labeled}/{len(tasks)} pre-labeled "
            f"({figures['warm_speedup']}x faster than cold)"
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
