"""The local stack's settings file. `takemeter up` writes the settings its backend runs with
(Label Studio's URL and token, MODEL_DIR, BASE_MODEL) to `.stack/env`; the other
`takemeter` commands, run in the clone (or a folder holding `.stack/`) with no Label
Studio of their own (neither LABEL_STUDIO_URL nor LABEL_STUDIO_API_KEY set), take from it
what the environment does not set, and say so. The file is shell syntax, readable only by
its owner: `set -a; . .stack/env; set +a` gives any other program the same settings.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from backend.files import atomic_open
from takemeter.stack import ROOT

FOLDER = ".stack"
FILE_NAME = "env"
SHARED = ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "MODEL_DIR", "BASE_MODEL")


def write(path: Path, env: Mapping[str, str]) -> None:
    """The SHARED settings of `env`, one `NAME='value'` line each, mode 0600."""
    lines = [f"{name}={shlex.quote(env[name])}\n" for name in SHARED if env.get(name)]
    with atomic_open(path, "w", permissions=0o600, encoding="utf-8") as handle:
        handle.writelines(lines)  # 0600: it holds the API token


def read(path: Path) -> dict[str, str]:
    """The settings in a file `write` made (unknown names and malformed lines skipped)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if not sep or name not in SHARED:
            continue
        words = shlex.split(value)
        if len(words) == 1:
            found[name] = words[0]
    return found


def find(cwd: Path | None = None) -> Path | None:
    """`.stack/env` in the working folder, else in the clone this package runs from."""
    for folder in (cwd or Path.cwd(), ROOT):
        candidate = folder / FOLDER / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def fill(environ: Mapping[str, str], cwd: Path | None = None) -> tuple[dict[str, str], str]:
    """`environ` with the local stack's settings where it lacks them, and a line saying
    which came from where ("" when none did). A Label Studio named in the environment
    wins: then nothing is taken from the stack, not even its MODEL_DIR."""
    env = dict(environ)
    if env.get("LABEL_STUDIO_URL") or env.get("LABEL_STUDIO_API_KEY"):
        return env, ""
    path = find(cwd)
    if path is None:
        return env, ""
    taken = {k: v for k, v in read(path).items() if not env.get(k)}
    env.update(taken)
    if not taken:
        return env, ""
    return env, f"settings: {', '.join(sorted(taken))} from the local stack ({path})"
