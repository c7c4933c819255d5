"""Load benchmark: the backend under gunicorn (WORKERS=2, THREADS=8, basic auth) with every
post's LLM answer in the cache and LLM_BASE_URL on a closed port, so /predict answers from
the cache and nothing else is asked. For --duration seconds, all at once: clients sending
POST /predict (10 cached posts each), clients sending POST /setup, slow clients that open
a socket, send part of the headers and stall (reconnecting when dropped), and one GET
/health a second. Loopback only. Prints a table; writes JSON (git revision, command line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests

from backend.domain.taxonomy import parse_taxonomy
from backend.llm import prompt
from backend.llm.cache import AnswerCache, CachedAnswer
from takemeter import stack
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parent.parent
AUTH = ("bench", "bench-secret")
MODEL = "smollm2-135m-instruct"


def summary(samples: list[tuple[str, float, str]], name: str, duration: float) -> dict:
    times = sorted(seconds for n, seconds, _ in samples if n == name) or [0.0]
    answers = Counter(answer for n, _, answer in samples if n == name)

    def ms(q: float) -> float:
        return round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 1)

    count = sum(answers.values())
    return {
        "requests": count,
        "per_second": round(count / duration, 1),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
        "answers": dict(answers),
        "errors": sum(n for answer, n in answers.items() if answer != "200"),
    }


def timed(samples: list, name: str, call: Callable[[], requests.Response]) -> None:
    started = time.monotonic()
    try:
        answer = str(call().status_code)
    except requests.RequestException as exc:
        answer = type(exc).__name__
    samples.append((name, time.monotonic() - started, answer))  # append: thread-safe


def client(url: str, path: str, bodies: list[dict], samples: list, deadline: float) -> None:
    with requests.Session() as session:
        session.auth = AUTH
        while time.monotonic() < deadline:
            timed(
                samples,
                path,
                lambda: session.post(url + path, json=random.choice(bodies), timeout=30),
            )


def slow_client(port: int, deadline: float, events: list[str]) -> None:
    """Open, send half a header, stall; open again when the server drops the socket."""
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            events.append("connect failed")
            time.sleep(0.5)
            continue
        with sock:
            try:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
                events.append("opened")
                sock.settimeout(0.5)
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        if not sock.recv(4096):
                            raise ConnectionResetError("closed")
            except OSError:
                events.append("dropped by the server")


def fill_cache(path: Path, config: str) -> list[dict]:
    """An LLM answer for every demo post in a fresh cache; the posts as tasks."""
    taxonomy = parse_taxonomy(config)
    rows = [json.loads(line) for line in (ROOT / "data/demo_posts.jsonl").open()]
    texts = [r["text"] for r in rows if "text" in r]
    cache = AnswerCache(path)
    for i, text in enumerate(texts):
        label = taxonomy.names[i % len(taxonomy.names)]
        cache.put(
            prompt.cache_key(MODEL, taxonomy, text, max_chars=4000),
            CachedAnswer(label, 0.7, json.dumps({"label": label})),
            model=MODEL,
        )
    return [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60, help="seconds (default 60)")
    parser.add_argument("--predict-clients", type=int, default=50)
    parser.add_argument("--setup-clients", type=int, default=20)
    parser.add_argument("--slow-clients", type=int, default=20)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/load.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    config = (ROOT / "label_config.xml").read_text()
    tasks = fill_cache(work / "answers.sqlite", config)
    bodies = {
        "/predict": [
            {"tasks": random.sample(tasks, 10), "label_config": config, "project": "1.0"}
            for _ in range(200)
        ],
        "/setup": [{"project": "1.0", "schema": config}],
    }
    clients = {"/predict": args.predict_clients, "/setup": args.setup_clients}
    env = {
        "MODEL_DIR": str(work / "models"),
        "LLM_CACHE": str(work / "answers.sqlite"),
        "LLM_BASE_URL": f"http://127.0.0.1:{stack.free_port()}/v1",
        "LLM_MODEL": MODEL,
        "WORKERS": "2",
        "THREADS": "8",
        "BASIC_AUTH_USER": AUTH[0],
        "BASIC_AUTH_PASS": AUTH[1],
        "LOG_LEVEL": "WARNING",
    }
    samples: list[tuple[str, float, str]] = []
    events: list[str] = []
    port, metrics = stack.free_port(), {}
    with stack.running() as processes:
        processes.append(stack.start_backend(env=env, port=port, log_path=work / "log"))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + args.duration
        threads = [
            threading.Thread(target=client, args=(url, path, bodies[path], samples, deadline))
            for path, n in clients.items()
            for _ in range(n)
        ] + [
            threading.Thread(target=slow_client, args=(port, deadline, events))
            for _ in range(args.slow_clients)
        ]
        for thread in threads:
            thread.start()
        while (now := time.monotonic()) < deadline:  # /health once a second
            timed(samples, "/health", lambda: requests.get(url + "/health", timeout=10))
            time.sleep(max(0.0, now + 1 - time.monotonic()))
        for thread in threads:
            thread.join()
        with contextlib.suppress(requests.RequestException):
            metrics = requests.get(url + "/metrics", auth=AUTH, timeout=30).json()

    slow = Counter(events)
    endpoints = {
        name: summary(samples, name, args.duration) for name in ("/predict", "/setup", "/health")
    }
    row = "{:9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>6}".format
    print(row("endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"))
    for name, s in endpoints.items():
        print(
            row(
                name,
                *(s[k] for k in ("requests", "per_second", "p50_ms", "p99_ms", "max_ms", "errors")),
            )
        )
    health = endpoints["/health"]
    print(
        f"/health: {health['answers'].get('200', 0)} of {health['requests']} polls answered "
        f"200, slowest {health['max_ms']} ms; slow clients: {dict(slow)}; LLM calls "
        f"{metrics.get('llm_calls')}, cache hits {metrics.get('cache_hits')}"
    )
    write_result(
        args.json,
        {
            "duration_s": args.duration,
            "clients": {**clients, "slow": args.slow_clients},
            "backend": {"workers": 2, "threads": 8, "basic_auth": True},
            "endpoints": endpoints,
            "slow_clients": dict(slow),
            "metrics": metrics,
            "health_polls_ms": [[round(t * 1000, 1), a] for n, t, a in samples if n == "/health"],
        },
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
