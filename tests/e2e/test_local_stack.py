"""`takemeter up` as a newcomer runs it, then the commands the README names next with
nothing typed: they find the stack's Label Studio, token and MODEL_DIR in `.stack/env`."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.domain.dataset import is_held_out
from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from takemeter import stack_settings
from takemeter.stack import free_port
from tests.conftest import ROOT, takemeter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Nothing the commands could find the stack by, and nothing to point them elsewhere.
UNSET = ("LABEL_STUDIO", "MODEL_DIR", "BASE_MODEL", "LLM_", "REDIS_URL", "BROKER_URL", "BASIC_")


def ready_line(log: Path, process: subprocess.Popen, *, timeout: float) -> dict:
    """The JSON line `takemeter up --json` prints once the demo is pre-labeled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                return json.loads(line)
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    raise AssertionError(f"takemeter up was not ready in {timeout} s: {log.read_text()[-3000:]}")


def test_after_takemeter_up_export_and_evaluate_need_nothing_typed(tmp_path, label_config):
    folder = tmp_path / "work"
    folder.mkdir()
    posts = folder / "posts.jsonl"
    lines = (ROOT / "data" / "demo_posts.jsonl").read_text().splitlines()
    posts.write_text("\n".join(lines[:25]) + "\n")  # the comment line and 24 posts
    env = {k: v for k, v in os.environ.items() if not k.startswith(UNSET)}
    log = folder / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "takemeter"),
                "up",
                "--json",
                "--state",
                str(folder / ".stack"),
                "--ls-port",
                str(free_port()),
                "--backend-port",
                str(free_port()),
                "--posts",
                str(posts),
            ],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = ready_line(log, up, timeout=600)
        project = ready["project"]
        # The demo's own login is shown; the settings file is the owner's alone.
        assert ready["password"] == "takemeter-demo" and ready["api_token"]
        settings_file = folder / ".stack" / "env"
        assert ready["settings_file"] == str(settings_file)
        assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
        assert "set -a; . " in log.read_text()  # the line to paste into another shell

        # An annotator labels the held-out posts.
        shared = stack_settings.read(settings_file)
        from label_studio_sdk import LabelStudio

        client = LabelStudio(
            base_url=shared["LABEL_STUDIO_URL"], api_key=shared["LABEL_STUDIO_API_KEY"]
        )
        taxonomy = parse_taxonomy(label_config)
        gold = {json.loads(x)["text"]: json.loads(x)["label"] for x in lines[1:25]}
        held_out = [t for t in ls_client.all_tasks(client, project) if is_held_out(t, percent=20)]
        assert held_out, "no held-out task among the demo posts"
        for task in held_out:
            client.annotations.create(
                id=task["id"], result=taxonomy.result(gold[task["data"]["text"]])
            )

        # The README's next commands, in that folder, with nothing set.
        exported = takemeter(
            "export", "--project", str(project), "--format", "csv", "--out", "out/a.csv",
            env=env, cwd=folder,
        )  # fmt: skip
        assert f"from the local stack ({settings_file})" in exported.stderr
        with (folder / "out" / "a.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert sorted(int(r["task_id"]) for r in rows) == sorted(t["id"] for t in held_out)
        assert all(r["label"] == gold[r["text"]] for r in rows)

        evaluated = takemeter(
            "evaluate", "--project", str(project), "--out", "out/eval", "--json",
            env=env, cwd=folder,
        )  # fmt: skip
        assert "from the local stack" in evaluated.stderr
        # No version trained yet: the stack's MODEL_DIR was searched, and the LLM judged.
        assert f"MODEL_DIR ({folder / '.stack' / 'model-data'})" in evaluated.stderr
        report = json.loads(evaluated.stdout)
        assert len(report["items"]) == len(held_out)
        # The stack's MODEL_DIR holds the LLM's answers: the evaluation asked for none.
        n = len(held_out)
        assert f"{n} of {n} answers from the cache" in " ".join(report["meta"]["notes"])
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)
