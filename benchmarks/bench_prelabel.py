"""Benchmark bulk pre-labeling: N posts in a real Label Studio, pre-labeled by the
background job through an OpenAI-compatible stand-in with a fixed latency, side by side
with the same N requests sent by a bare SDK client at the same concurrency.

Figures: the time until every pre-label is in Label Studio against the ideal N x latency /
concurrency, LLM calls per distinct post, the time Label Studio spent importing the
predictions; then when the job ended (it embeds each pushed batch for the next head beside
the stream, with MiniLM-L6 as `make up` does), peak memory, and the CPU this process spent
a post (every thread of it, the embedding included). The
stand-in runs in its own process, Label Studio in another, the job in this one. Output: a
table and --json (default benchmarks/results/prelabel.json).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
from label_studio_sdk import LabelStudio

from backend.config import load_settings
from backend.domain.taxonomy import parse_taxonomy
from backend.inference.predictor import Predictor
from backend.llm import prompt
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.workflows.prelabel import prelabel_project
from takemeter import stack
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result
from tests.doubles.llm_endpoint import MisbehavingLLM

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("numbers", "insulin", "a1c", "lows", "pump", "diet", "walk", "doctor", "sensor")


def posts(n: int) -> list[str]:
    """n distinct short posts."""
    return [
        f"post {i}: my {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]} "
        f"this week{'?' if i % 3 == 0 else '.'}"
        for i in range(n)
    ]


def scripted(text: str) -> str:
    return "seeking_support" if "?" in text else "personal_experience"


class TimedImports:
    """The SDK's projects resource with import_predictions timed."""

    def __init__(self, projects) -> None:
        self._projects = projects
        self.seconds = 0.0
        self.calls = 0

    def import_predictions(self, **kwargs):
        started = time.monotonic()
        try:
            return self._projects.import_predictions(**kwargs)
        finally:
            self.seconds += time.monotonic() - started
            self.calls += 1

    def __getattr__(self, name: str):
        return getattr(self._projects, name)


class TimedClient:
    """The SDK client, its prediction imports timed."""

    def __init__(self, client: LabelStudio) -> None:
        self._client = client
        self.projects = TimedImports(client.projects)

    def __getattr__(self, name: str):
        return getattr(self._client, name)


def serve_llm(latency: float, urls) -> None:
    """The stand-in endpoint in a process of its own, as any real endpoint is: its
    request handling must not share the job's interpreter lock."""
    with MisbehavingLLM("scripted", latency=latency, answer=scripted) as llm:
        urls.put(llm.url)
        threading.Event().wait()


def requests_served(url: str) -> int:
    return httpx.get(url.removesuffix("/v1") + "/requests").json()["requests"]


def raw_endpoint(url: str, texts: list[str], concurrency: int, config: str) -> tuple[float, float]:
    """The same requests straight to the endpoint from a bare SDK client
    (chat.completions.create, no cache, no Label Studio), at the same concurrency:
    (wall seconds, this process's CPU seconds)."""
    taxonomy = parse_taxonomy(config)
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)

    def ask(text: str) -> None:
        client.chat.completions.create(
            model="hosted",
            temperature=0,
            max_tokens=40,
            messages=prompt.build_messages(taxonomy, text, max_chars=4000),
        )

    started, cpu = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(ask, texts))
    return time.monotonic() - started, time.process_time() - cpu


def prelabel_in_label_studio(
    args, texts: list[str], llm_url: str, work: Path, label_studio_env: dict[str, str]
) -> dict:
    """A fresh Label Studio with the posts as tasks, pre-labeled by the job."""
    config = (ROOT / "label_config.xml").read_text()
    port = stack.free_port()
    login = stack.LabelStudioLogin(
        url=f"http://127.0.0.1:{port}",
        email="bench@example.com",
        password="bench-password-1",
        token="bench-token-12345",
    )
    data = Path(tempfile.mkdtemp(prefix="ls-", dir=work))
    with stack.running() as processes:
        processes.append(
            stack.start_label_studio(
                data_dir=data,
                port=port,
                login=login,
                log_path=data / "ls.log",
                extra_env=label_studio_env,
            )
        )
        ls = LabelStudio(base_url=login.url, api_key=login.token, timeout=600)
        project = ls.projects.create(title="bench", label_config=config).id
        started = time.monotonic()
        for i in range(0, len(texts), 2000):
            ls.projects.import_tasks(id=project, request=[{"text": t} for t in texts[i : i + 2000]])
        task_import = time.monotonic() - started
        print(f"{len(texts)} tasks imported in {task_import:.1f} s", file=sys.stderr)

        settings = load_settings(
            {"MODEL_DIR": str(work / "models"), "LLM_BASE_URL": llm_url, **job_settings(args)}
        )
        predictor = Predictor(settings, labeler_from_settings(settings))
        timed = TimedClient(ls)
        calls_before = requests_served(llm_url)
        started, cpu = time.monotonic(), time.process_time()
        counts = prelabel_project(timed, predictor, settings, project, lambda **_: None)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
        calls = requests_served(llm_url) - calls_before
        stored = sum(1 for _ in ls.predictions.list(project=project))
        predictor.labeler.close()
    return {
        "wall_s": round(wall, 1),
        "llm_phase_s": counts["llm_seconds"],
        "pushed_s": counts["pushed_seconds"],  # every pre-label stored in Label Studio
        "embedded": counts["embedded"],  # posts embedded for the next head
        "cpu_ms_per_post": round(cpu / len(texts) * 1000, 2),
        "llm_calls": calls,
        "calls_per_distinct_post": round(calls / len(set(texts)), 3),
        "pushed": counts["done"],
        "predictions_in_label_studio": stored,
        "label_studio_import_s": round(timed.projects.seconds, 1),
        "import_calls": timed.projects.calls,
        "task_import_s": round(task_import, 1),
    }


def job_settings(args: argparse.Namespace) -> dict[str, str]:
    """The backend's settings for the job, where they differ from the defaults: the
    stand-in never fails, and the whole project may wait for the LLM at once."""
    return {
        "LLM_MODEL": "hosted",
        "LLM_CONCURRENCY": str(args.concurrency),
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT": "60",
        "PRELABEL_BATCH": str(args.batch),
        "LLM_MAX_QUEUED": str(args.posts + 1),
        # As `make up` runs it: the job embeds the posts with MiniLM-L6 for the next head.
        "BASE_MODEL": str(minilm_path()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per LLM answer")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=500, help="PRELABEL_BATCH")
    parser.add_argument(
        "--skip-default-import",
        action="store_true",
        help="skip the second Label Studio, at its default import",
    )
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "prelabel.json"
    )
    args = parser.parse_args()
    config = (ROOT / "label_config.xml").read_text()
    texts = posts(args.posts)
    work = Path(tempfile.mkdtemp(prefix="bench-prelabel-"))
    # Forked before any thread of this process starts.
    context = multiprocessing.get_context("fork")
    urls = context.Queue()
    endpoint = context.Process(target=serve_llm, args=(args.latency, urls), daemon=True)
    endpoint.start()
    llm_url = urls.get(timeout=60)
    try:
        # As `make up` runs Label Studio: its fast prediction import switched on.
        job = prelabel_in_label_studio(args, texts, llm_url, work, {})
        ideal = args.posts * args.latency / args.concurrency
        job.update(
            of_ideal=round(ideal / job["pushed_s"], 3),
            llm_phase_of_ideal=round(ideal / job["llm_phase_s"], 3),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        )
        raw, raw_cpu = raw_endpoint(llm_url, texts, args.concurrency, config)
        # A Label Studio at its defaults; the answers are cached now, so this run's wall
        # time is what storing the predictions costs there.
        default = (
            None
            if args.skip_default_import
            else prelabel_in_label_studio(
                args, texts, llm_url, work, {flag: "false" for flag in stack.FAST_PREDICTION_IMPORT}
            )
        )
    finally:
        endpoint.terminate()

    figures = {
        "posts": args.posts,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "ideal_s": round(ideal, 1),
        "prelabel_job": job,
        "raw_endpoint": {
            "wall_s": round(raw, 1),
            "of_ideal": round(ideal / raw, 3),
            "cpu_ms_per_post": round(raw_cpu / len(texts) * 1000, 2),
        },
        "job_vs_raw": round(raw / job["pushed_s"], 3),
        "label_studio_default_import": default,
        "backend_settings": job_settings(args),
    }
    write_result(args.json, figures)
    direct = figures["raw_endpoint"]
    print(
        f"{args.posts} posts, {args.latency * 1000:.0f} ms latency, concurrency "
        f"{args.concurrency}: ideal {ideal:.1f} s"
    )
    print(
        f"  LLM phase     : {job['llm_phase_s']:7.1f} s  {job['llm_phase_of_ideal']:.1%} of "
        f"ideal (start to every answer in, the task listing included)"
    )
    print(
        f"  pre-labels in : {job['pushed_s']:7.1f} s  {job['of_ideal']:.1%} of ideal, "
        f"{job['calls_per_distinct_post']:.2f} calls/post, Label Studio import "
        f"{job['label_studio_import_s']} s in {job['import_calls']} calls"
    )
    print(
        f"  job ended     : {job['wall_s']:7.1f} s  with {job['embedded']} posts embedded for "
        f"the next head, peak {job['peak_rss_mb']} MB, {job['cpu_ms_per_post']} ms CPU a "
        f"post (the embedding included)"
    )
    print(
        f"  raw endpoint  : {direct['wall_s']:7.1f} s  {direct['of_ideal']:.1%} of ideal, "
        f"{direct['cpu_ms_per_post']} ms CPU a post"
    )
    print(f"  job / raw     : {figures['job_vs_raw']:.1%}")
    if default:
        print(
            f"  Label Studio at its default import, answers cached: job {default['wall_s']} "
            f"s, import {default['label_studio_import_s']} s in "
            f"{default['import_calls']} calls"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
