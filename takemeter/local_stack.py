"""Bring up the whole stack locally: Label Studio (pip, SQLite), the backend under gunicorn
(with the embedded llama.cpp LLM unless LLM_BASE_URL is set), and a demo project with the
demo posts imported, the backend connected and its pre-labels pushed. Ctrl-C stops it all.

State lives in .stack/ (Label Studio's data, the backend's MODEL_DIR, logs): a second start
reuses it. `make up` runs this after installing both environments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.config import load_settings
from backend.labelstudio import client as ls_client
from takemeter import stack, stack_settings

ROOT = stack.ROOT

DEMO_TITLE = "r/diabetes demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state",
        type=Path,
        default=ROOT / ".stack",
        help="folder for Label Studio's data, MODEL_DIR and logs",
    )
    parser.add_argument("--ls-port", type=int, default=int(os.environ.get("LS_PORT", 8080)))
    parser.add_argument("--backend-port", type=int, default=int(os.environ.get("PORT", 9090)))
    parser.add_argument("--posts", type=Path, default=ROOT / "data" / "demo_posts.jsonl")
    parser.add_argument(
        "--no-wait", action="store_true", help="set everything up, print the URL, then stop it all"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the URLs and login as one JSON object once ready"
    )
    return parser.parse_args(argv)


def backend_env(args: argparse.Namespace, login: stack.LabelStudioLogin) -> dict[str, str]:
    env = {
        "LABEL_STUDIO_URL": login.url,
        "LABEL_STUDIO_API_KEY": login.token,
        "MODEL_DIR": os.environ.get("MODEL_DIR", str(args.state / "model-data")),
    }
    if not os.environ.get("BASE_MODEL"):
        # distilbert-base-uncased needs the model hub; the local stack trains the
        # pretrained MiniLM-L6 that ships in a registry package instead.
        from takemeter.offline_models import minilm_path

        env["BASE_MODEL"] = str(minilm_path())
    return env


def prelabel(project: int, backend_url: str, *, wait: float = 1200) -> None:
    """Follow the background pre-labeling job (connecting the backend started it) until
    every task has a pre-label, or `wait` seconds."""
    client = ls_client.connect(load_settings())
    total = len(ls_client.all_tasks(client, project))
    ls_client.retrieve_predictions(client, project)  # what is cached now, the rest queued
    started, done, shown = time.monotonic(), 0, -1
    while time.monotonic() - started < wait:
        done = len(ls_client.prediction_versions(client, project))
        if done != shown:
            print(
                f"  pre-labels: {done}/{total} tasks ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            shown = done
        if done >= total:
            return
        time.sleep(5)
    print(
        f"  {total - done} tasks have no pre-label yet; the job goes on in the background "
        f"(progress: {backend_url}/jobs?project={project})",
        flush=True,
    )


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `kill` (SIGTERM) stops the stack like Ctrl-C does: the finally below stops every
    # process it started, which run in sessions of their own.
    signal.signal(signal.SIGTERM, interrupt)
    args.state.mkdir(parents=True, exist_ok=True)
    logs = args.state / "logs"
    # What the user chose is theirs to know; only the demo's defaults are shown.
    chosen = {
        name for name in ("LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_API_KEY") if name in os.environ
    }
    login = stack.LabelStudioLogin(
        url=f"http://127.0.0.1:{args.ls_port}",
        email=os.environ.get("LABEL_STUDIO_USERNAME", "admin@takemeter.local"),
        password=os.environ.get("LABEL_STUDIO_PASSWORD", "takemeter-demo"),
        token=os.environ.get("LABEL_STUDIO_API_KEY", "takemeter-demo-token"),
    )
    with stack.running() as processes:
        try:
            print(
                f"Starting Label Studio on {login.url} (first start migrates its database: "
                f"about a minute; log: {logs / 'label-studio.log'})",
                flush=True,
            )
            started = time.monotonic()
            processes.append(
                stack.start_label_studio(
                    data_dir=args.state / "label-studio",
                    port=args.ls_port,
                    login=login,
                    log_path=logs / "label-studio.log",
                )
            )
            print(f"  Label Studio answered after {time.monotonic() - started:.0f} s", flush=True)

            env = backend_env(args, login)
            settings_file = args.state / stack_settings.FILE_NAME
            stack_settings.write(settings_file, env)
            backend_url = f"http://127.0.0.1:{args.backend_port}"
            print(
                f"Starting the backend on {backend_url} (log: {logs / 'backend.log'})", flush=True
            )
            processes.append(
                stack.start_backend(env=env, port=args.backend_port, log_path=logs / "backend.log")
            )
            os.environ.update(env)
            setup = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "takemeter",
                    "setup",
                    "--title",
                    DEMO_TITLE,
                    "--posts",
                    str(args.posts),
                    "--backend-url",
                    backend_url,
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if setup.returncode != 0:
                print(setup.stderr, file=sys.stderr)
                return 1
            project = json.loads(setup.stdout)["project"]
            prelabel(project, backend_url)

            password = None if "LABEL_STUDIO_PASSWORD" in chosen else login.password
            token = None if "LABEL_STUDIO_API_KEY" in chosen else login.token
            if args.json:
                print(
                    json.dumps(
                        {
                            "label_studio": f"{login.url}/projects/{project}/data",
                            "email": login.email,
                            "password": password,
                            "api_token": token,
                            "backend": backend_url,
                            "project": project,
                            "llm": os.environ.get("LLM_BASE_URL") or "embedded",
                            "settings_file": str(settings_file),
                        }
                    ),
                    flush=True,
                )
            print(file=sys.stderr if args.json else sys.stdout)
            print(f"Label Studio:  {login.url}/projects/{project}/data")
            print(f"  login:       {login.email}")
            print(f"  password:    {password or '(your LABEL_STUDIO_PASSWORD)'}")
            print(f"  API token:   {token or '(your LABEL_STUDIO_API_KEY)'}")
            print(
                f"Backend:       {backend_url}  (status: {backend_url}/training?project={project})"
            )
            if not os.environ.get("LLM_BASE_URL"):
                print(
                    "LLM:           the embedded SmolLM2-135M-Instruct: a tiny model for "
                    "trying the tool, not for real pre-labels. Set LLM_BASE_URL, LLM_API_KEY "
                    "and LLM_MODEL to use a strong one."
                )
            found_by = (
                f"takemeter commands run in {args.state.parent} read it themselves; "
                if args.state.name == stack_settings.FOLDER
                else ""
            )
            print(
                f"Settings:      {settings_file} ({found_by}for another shell:\n"
                f"  set -a; . {shlex.quote(str(settings_file))}; set +a )"
            )
            if args.no_wait:
                return 0
            print("\nPress Ctrl-C to stop.", flush=True)
            while all(p.poll() is None for p in processes):
                time.sleep(1)
            print("A process of the stack exited; see the logs in", logs, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
